"""What the evaluator drives: a batch of episodes in, a batch of actions out.

Why a protocol: the evaluator steps every episode of every task together, so
anything that maps a batch of (observation, previous reward, task id) to a
batch of actions can be scored. :class:`HarmoDTPolicy` adapts HarmoDT with a
per-episode Decision-Transformer window (:mod:`harmodt_algo.contexts`, the
same semantics as d3rlpy's ``StatefulTransformerWrapper``); the one-hot adapters of
d3rlpy's own algorithms live in :mod:`harmodt_algo.one_hot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..contexts import EpisodeContexts, lookup_target_return
from ..harmodt import HarmoDT
from ..types import F32, I64, Bool, FloatArray

__all__ = [
    "MultiTaskPolicy",
    "HarmoDTPolicy",
    "ScriptedExperts",
    "harmodt_batch_actions",
]


@runtime_checkable
class MultiTaskPolicy(Protocol):
    """A batch of episodes in, a batch of actions out.

    ``task_ids`` index ``task_names``, the suite's task list (the dataset's
    ``task_names`` metadata order), which ``reset`` receives once per batch.
    """

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        """Start ``len(task_ids)`` new episodes; row ``i`` plays ``task_ids[i]``."""
        ...

    def act(
        self,
        observations: FloatArray,  # (N, obs) current observation of each episode
        rewards: FloatArray,  # (N,) reward of the previous step (0 at the start)
        task_ids: I64,  # (N,) same as given to reset
        active: Bool,  # (N,) False once an episode ended: its row is ignored
    ) -> FloatArray:  # (N, A); rows of inactive episodes are unspecified
        """Actions for every active episode (each call is one env step)."""
        ...


def harmodt_batch_actions(
    algo: HarmoDT,
    observations: torch.Tensor,  # (B, L, obs), already scaled
    actions: torch.Tensor,  # (B, L, A), already scaled
    returns_to_go: torch.Tensor,  # (B, L, 1), already scaled
    timesteps: torch.Tensor,  # (B, L) int64
    masks: torch.Tensor,  # (B, L) 1 = real step, 0 = left padding
    task_ids: torch.Tensor,  # (B,) model task indices
    weights: Any = None,
) -> tuple[torch.Tensor, Any]:
    """HarmoDT's action for the last position of each sequence: (B, A), scaled.

    The only place that touches the Impl's internals: one forward pass for a
    mixed-task batch. Also returns the batch's block weights (of the rows
    sorted by task), so a caller may pass them back while the batch's task ids
    do not change (the model does not change during an evaluation).
    """
    impl = algo.impl
    if impl is None:
        raise RuntimeError("the model is not built yet: fit() or load it first")
    impl.modules.set_eval()
    # rows sorted by task: equal task groups then run on the per-task weights
    # directly (grouped layout) instead of a weight copy per row
    order = torch.argsort(task_ids, stable=True)  # (B,)
    with torch.no_grad():
        if weights is None:
            weights = impl.task_weights(task_ids[order])
        out = impl.forward_tasks(
            observations[order],
            actions[order],
            returns_to_go[order],
            timesteps[order],
            masks[order],
            weights,
        )[:, -1]  # (B, A), sorted rows
    last = torch.empty_like(out)
    last[order] = out
    return last, weights


class HarmoDTPolicy:
    """HarmoDT as a :class:`MultiTaskPolicy`: one forward pass per env step.

    Each episode keeps the last ``context_size`` observations, actions,
    returns-to-go and timesteps exactly as d3rlpy's ``StatefulTransformerWrapper``
    does (returns-to-go start at the target and drop by each reward, timesteps
    start at 1 and stop at ``max_timestep``, the current step's action slot is
    zeros, short contexts are left-padded with zeros and mask 0, the config's
    scalers are applied to the whole padded window like
    ``TorchTransformerInput.from_numpy``), so a single episode gets the same
    actions as ``algo.for_task(name).as_stateful_wrapper(target)``.

    Args:
        algo: a built HarmoDT.
        target_returns: the initial return-to-go, one for all tasks or per task
            name (see :func:`~harmodt_algo.evaluation.resolve_target_returns`
            for the dataset rule).
        per_task_forward: run one forward pass per distinct task of the batch
            (shared weights) instead of one mixed-task pass (per-sequence
            weights). Same actions (to float rounding); on CPU it was ~1.7x
            faster for batches of 50+ episodes over 5 tasks (docs/evaluation.md).
    """

    def __init__(
        self,
        algo: HarmoDT,
        target_returns: float | Mapping[str, float],
        per_task_forward: bool = False,
    ):
        if algo.impl is None:
            raise RuntimeError("the model is not built yet: fit() or load it first")
        self._algo = algo
        self._targets = target_returns
        cfg = algo.config
        self._context = int(cfg.context_size)
        self._max_timestep = int(cfg.max_timestep)
        self._obs_size = int(algo.impl.observation_shape[0])  # type: ignore[arg-type]
        self._action_size = int(algo.impl.action_size)
        self._device = algo.impl.device
        self._per_task = per_task_forward
        self.reset(np.zeros(0, np.int64), list(algo.task_names))

    @property
    def algo(self) -> HarmoDT:
        return self._algo

    def target_return(self, task: str) -> float:
        return lookup_target_return(self._targets, task)

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        names = list(self._algo.task_names if task_names is None else task_names)
        ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)  # (N,)
        if ids.size and (ids.min() < 0 or ids.max() >= len(names)):
            raise ValueError(f"task ids must be in [0, {len(names)}), got {ids}")
        # model task index of each episode; unknown names raise ValueError
        self._model_ids = np.array(
            [self._algo.task_index(names[i]) for i in ids], dtype=np.int64
        )  # (N,)
        targets = {names[i]: self.target_return(names[i]) for i in set(ids.tolist())}
        self._ctx = EpisodeContexts(
            np.array([targets[names[i]] for i in ids], dtype=np.float64),
            self._context,
            self._obs_size,
            self._action_size,
            self._max_timestep,
        )
        # block weights by the task ids of the rows they serve (the model does
        # not change during an evaluation); refreshed when the rows change
        self._weights: dict[bytes, Any] = {}

    def act(
        self,
        observations: FloatArray,  # (N, obs)
        rewards: FloatArray,  # (N,)
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> F32:  # (N, A)
        n = self._model_ids.size
        obs = np.asarray(observations)
        if obs.shape != (n, self._obs_size):
            raise ValueError(
                f"observations must have shape ({n}, {self._obs_size}), "
                f"got {obs.shape}; call reset() with the batch's task ids first"
            )
        out = np.zeros((n, self._action_size), np.float32)  # (N, A)
        idx = np.flatnonzero(np.asarray(active, dtype=bool))  # (n_active,)
        if idx.size == 0:
            return out
        if not np.all(np.isfinite(obs[idx])):
            raise ValueError("observation contains NaN or inf; check the environment")
        reward = np.asarray(rewards, dtype=np.float64).reshape(-1)[idx]  # (n_active,)
        sel: slice | I64 = slice(None) if idx.size == n else idx
        self._ctx.push(idx, sel, obs[idx], reward)
        action = self._predict(idx, sel)  # (n_active, A), unscaled
        self._ctx.record(idx, sel, action, reward)
        out[idx] = action
        return out

    def _predict(self, idx: I64, sel: slice | I64) -> F32:
        cfg = self._algo.config
        dev = self._device
        obs, act, rtg, ts, mask = self._ctx.scaled(sel, cfg, dev)
        model_ids = self._model_ids[idx]  # (n,)
        if self._per_task:
            groups = [np.flatnonzero(model_ids == t) for t in np.unique(model_ids)]
        else:
            groups = [np.arange(model_ids.size)]
        cache, self._weights = self._weights, {}
        action = torch.empty((model_ids.size, self._action_size), device=dev)
        for rows in groups:
            ids = model_ids[rows]  # (g,)
            key = ids.tobytes()
            pick = slice(None) if len(groups) == 1 else torch.from_numpy(rows).to(dev)
            out, self._weights[key] = harmodt_batch_actions(
                self._algo,
                obs[pick],
                act[pick],
                rtg[pick],
                ts[pick],
                mask[pick],
                torch.from_numpy(ids).to(dev),
                cache.get(key),
            )  # (g, A)
            action[pick] = out
        if cfg.action_scaler is not None:
            action = cfg.action_scaler.reverse_transform(action)
        return action.cpu().numpy().astype(np.float32, copy=False)  # type: ignore[no-any-return]


class ScriptedExperts:
    """Meta-World's scripted expert of each task as a :class:`MultiTaskPolicy`:
    the ceiling a dataset's tasks allow, measured by the same evaluator (and
    what the evaluator's own tests and speed benchmark drive)."""

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task_names is None:
            raise ValueError("ScriptedExperts needs the task names")
        self.names = [task_names[i] for i in task_ids]
        self.experts = [ENV_POLICY_MAP[n]() for n in self.names]  # type: ignore[abstract]

    def act(
        self,
        observations: FloatArray,  # (N, 39)
        rewards: FloatArray,  # (N,)
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> FloatArray:  # (N, 4)
        # float32, as the experts return them: Meta-World scales the action in
        # its dtype, so float64 copies would step a (slightly) different env
        out = np.zeros((len(self.experts), 4), dtype=np.float32)
        for i in np.flatnonzero(active):
            out[i] = np.clip(self.experts[i].get_action(observations[i]), -1, 1)
        return out
