"""The one-hot task trick, in one place: d3rlpy's algorithms made multi-task.

Why this module exists: a d3rlpy algorithm has no notion of a task, so the
standard multi-task baseline (MTBC, MTIQL, MTDT) appends the task id as a
one-hot vector to every observation, in the training data *and* in the
environment, and trains the unchanged algorithm on the pooled data. Training
(:mod:`harmodt_algo.baselines`) and evaluation (:mod:`harmodt_algo.evaluation`)
must agree on that vector exactly, so both take it from here.

* :func:`append_one_hot` / :func:`strip_one_hot` - the observation transform
  and its inverse; :class:`OneHotTaskObservation` - the same as a gymnasium
  wrapper (for d3rlpy's own single-env evaluation helpers).
* :func:`one_hot_episodes` / :func:`one_hot_replay_buffer` - a dataset's
  episodes with the one-hot appended (what ``algo.fit`` trains on).
* :class:`TaskOrder` - the one-hot position of each episode's task.
* :class:`D3rlpyOneHotPolicy` (Q-learning-style: BC, IQL, CQL, ...) and
  :class:`D3rlpyTransformerOneHotPolicy` (``DecisionTransformer``) - fitted
  algorithms as a :class:`~harmodt_algo.evaluation.MultiTaskPolicy`.

The task's one-hot position is its index in the dataset's ``task_names`` (for a
``dataset_recipes`` dataset: the suite order). Given task names, the policies
look tasks up by name, so an evaluator with another task list still gets the
right column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from d3rlpy.algos import DecisionTransformer
from d3rlpy.algos.qlearning import QLearningAlgoBase
from d3rlpy.algos.transformer import TransformerAlgoBase
from d3rlpy.algos.transformer.inputs import TransformerInput
from d3rlpy.constants import ActionSpace
from d3rlpy.dataset import Episode, ReplayBuffer, create_infinite_replay_buffer

from .contexts import EpisodeContexts, lookup_target_return
from .data import as_multitask_dataset
from .types import F32, I64, Bool, FloatArray

__all__ = [
    "D3rlpyOneHotPolicy",
    "D3rlpyTransformerOneHotPolicy",
    "OneHotTaskObservation",
    "TaskOrder",
    "append_one_hot",
    "one_hot_episodes",
    "one_hot_replay_buffer",
    "strip_one_hot",
]


# --------------------------------------------------------------------------- #
# Observations
# --------------------------------------------------------------------------- #


def _check_num_tasks(num_tasks: int) -> int:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int | np.integer):
        raise TypeError(f"num_tasks must be an int, got {num_tasks!r}")
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be > 0, got {num_tasks}")
    return int(num_tasks)


def append_one_hot(
    observations: npt.ArrayLike, task_id: int | npt.ArrayLike, num_tasks: int
) -> F32:
    """``concat(observation, one_hot(task_id))`` along the last axis, float32.

    ``observations`` is (..., obs); ``task_id`` an int (every row is that task)
    or an integer array broadcastable to ``observations.shape[:-1]``.
    Returns (..., obs + num_tasks).
    """
    n = _check_num_tasks(num_tasks)
    obs = np.asarray(observations, dtype=np.float32)  # (..., obs)
    if obs.ndim == 0:
        raise ValueError("observations must have at least one axis (..., obs)")
    ids = np.asarray(task_id)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"task ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"task ids must be in [0, {n}), got {ids}")
    onehot = np.eye(n, dtype=np.float32)[ids]  # ids.shape + (n,)
    onehot = np.broadcast_to(onehot, (*obs.shape[:-1], n))  # (..., n)
    return np.concatenate([obs, onehot], axis=-1)  # (..., obs + n)


def strip_one_hot(observations: npt.ArrayLike, num_tasks: int) -> tuple[F32, I64]:
    """The inverse of :func:`append_one_hot`: ``(observations, task_ids)``.

    Raises ``ValueError`` when the last ``num_tasks`` columns are not a one-hot
    vector (exactly one 1, the rest 0) in every row.
    """
    n = _check_num_tasks(num_tasks)
    x = np.asarray(observations, dtype=np.float32)  # (..., obs + n)
    if x.ndim == 0 or x.shape[-1] <= n:
        raise ValueError(
            f"observations of shape {x.shape} have no room for {n} one-hot "
            "columns after the observation"
        )
    onehot = x[..., -n:]  # (..., n)
    is_binary = np.all((onehot == 0.0) | (onehot == 1.0), axis=-1)  # (...,)
    if not np.all(is_binary & (onehot.sum(axis=-1) == 1.0)):
        raise ValueError(
            f"the last {n} columns are not a one-hot task id in every row; was "
            "num_tasks right?"
        )
    return x[..., :-n].copy(), np.argmax(onehot, axis=-1).astype(np.int64)


class OneHotTaskObservation(gym.ObservationWrapper[F32, Any, Any]):
    """An env whose observations carry the task's one-hot id (float32), for
    d3rlpy's single-env helpers such as ``evaluate_qlearning_with_environment``
    (the batched :class:`~harmodt_algo.evaluation.MultiTaskEvaluator` appends
    the one-hot itself)."""

    def __init__(self, env: gym.Env[Any, Any], task_id: int, num_tasks: int):
        super().__init__(env)
        n = _check_num_tasks(num_tasks)
        if not 0 <= task_id < n:
            raise ValueError(f"task_id must be in [0, {n}), got {task_id}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise TypeError(f"expected a flat Box observation space, got {space}")
        self.task_id = int(task_id)
        self.num_tasks = n
        low = np.concatenate([space.low.astype(np.float32), np.zeros(n, np.float32)])
        high = np.concatenate([space.high.astype(np.float32), np.ones(n, np.float32)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: Any) -> F32:
        return append_one_hot(observation, self.task_id, self.num_tasks)


# --------------------------------------------------------------------------- #
# Training data
# --------------------------------------------------------------------------- #


def one_hot_episodes(dataset: Any) -> list[Episode]:
    """Every episode with the task's one-hot id appended to each observation.

    ``dataset``: a ``MultiTaskDataset`` or anything ``as_multitask_dataset``
    accepts; the one-hot position is the dataset's task index (its
    ``task_names`` order, which for a recipe dataset is the suite order).
    Observations become (T, obs + num_tasks) float32: train a d3rlpy BC/IQL on
    them and evaluate it with :class:`D3rlpyOneHotPolicy`.
    """
    data = as_multitask_dataset(dataset)
    out: list[Episode] = []
    for t, episodes in enumerate(data.episodes):
        for ep in episodes:
            out.append(
                Episode(
                    # (T, obs) -> (T, obs + num_tasks)
                    observations=append_one_hot(ep.observations, t, data.num_tasks),
                    actions=np.array(ep.actions, np.float32),
                    rewards=np.array(ep.rewards, np.float32),
                    terminated=bool(ep.terminated),
                )
            )
    return out


def one_hot_replay_buffer(dataset: Any) -> ReplayBuffer:
    """A d3rlpy ``ReplayBuffer`` of :func:`one_hot_episodes` (for ``algo.fit``)."""
    return create_infinite_replay_buffer(episodes=one_hot_episodes(dataset))


# --------------------------------------------------------------------------- #
# Policies
# --------------------------------------------------------------------------- #


class TaskOrder:
    """The one-hot order a model was trained with: which column is which task.

    Either a task count (the column is the caller's task id, as
    :func:`one_hot_episodes` writes it for a dataset in suite order) or the
    task names in training order (the column is looked up by name, so callers
    with another task list still get the right one).
    """

    def __init__(self, tasks: int | Sequence[str]):
        if isinstance(tasks, int | np.integer):
            self.num_tasks = _check_num_tasks(int(tasks))
            self.names: list[str] | None = None
        else:
            self.names = [str(t) for t in tasks]
            if not self.names:
                raise ValueError("tasks is empty")
            self.num_tasks = len(self.names)

    def positions(self, task_ids: I64, task_names: Sequence[str] | None) -> I64:
        """One-hot column of each episode (by name when both lists are known).

        ``task_ids`` (N,) index ``task_names``; returns (N,).
        """
        if self.names is None or task_names is None:
            n = self.num_tasks
            if task_ids.size and (task_ids.min() < 0 or task_ids.max() >= n):
                raise ValueError(f"task ids must be in [0, {n}), got {task_ids}")
            return task_ids
        names = [task_names[i] for i in task_ids.tolist()]
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown}; the policy knows: {self.names}"
            )
        return np.array([self.names.index(n) for n in names], dtype=np.int64)


class D3rlpyOneHotPolicy:
    """A d3rlpy Q-learning-style algorithm (BC, IQL, CQL, ...) trained on
    ``concat(observation, one_hot(task))``, as a ``MultiTaskPolicy``.

    One ``algo.predict`` call per env step for the whole batch.

    Args:
        algo: a built d3rlpy algorithm with ``predict(x (N, obs + T)) -> (N, A)``.
        tasks: the one-hot order used in training (see :class:`TaskOrder`): the
            number of tasks or the task names in that order.
    """

    def __init__(self, algo: QLearningAlgoBase[Any, Any], tasks: int | Sequence[str]):
        self._order = TaskOrder(tasks)
        self._algo = algo
        self._positions = np.zeros(0, np.int64)  # (N,) one-hot column per episode

    @property
    def num_tasks(self) -> int:
        return self._order.num_tasks

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)  # (N,)
        self._positions = self._order.positions(ids, task_names)

    def act(
        self,
        observations: FloatArray,  # (N, obs)
        rewards: FloatArray,  # (N,) unused: the policy is Markovian
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> F32:  # (N, A)
        obs = np.asarray(observations, dtype=np.float32)  # (N, obs)
        idx = np.flatnonzero(np.asarray(active, dtype=bool))  # (n_active,)
        x = append_one_hot(obs[idx], self._positions[idx], self.num_tasks)
        action = np.asarray(self._algo.predict(x), dtype=np.float32)  # (n_active, A)
        out = np.zeros((obs.shape[0], action.shape[1]), np.float32)  # (N, A)
        out[idx] = action
        return out


class D3rlpyTransformerOneHotPolicy:
    """A d3rlpy Transformer algorithm (``DecisionTransformer``) trained on
    one-hot task observations, as a ``MultiTaskPolicy``.

    Each episode keeps the same window as d3rlpy's ``StatefulTransformerWrapper``
    (returns-to-go start at the target and drop by each reward, timesteps start
    at 1, the current step's action slot is zeros, short windows are
    left-padded, the config's scalers are applied to the padded window like
    ``TorchTransformerInput.from_numpy``), so one episode gets the wrapper's
    actions. The one difference: the timestep is capped at ``max_timestep - 1``
    where the wrapper caps at ``max_timestep`` and would index past d3rlpy's
    position table.

    For d3rlpy's ``DecisionTransformer`` all active episodes share one batched
    forward pass per env step (through ``impl.modules.transformer``, d3rlpy's
    ``ContinuousDecisionTransformer``); any other Transformer algorithm is
    called through its public ``predict`` one episode at a time
    (``batched=False`` forces that path; d3rlpy's impl takes one sequence per
    call).

    Args:
        algo: a built d3rlpy Transformer algorithm with continuous actions.
        tasks: the one-hot order used in training (see :class:`TaskOrder`).
        target_returns: the initial return-to-go, one for all tasks or per task
            name (then ``reset`` must receive the task names).
        batched: ``None`` batches when ``algo`` is a ``DecisionTransformer``.
    """

    def __init__(
        self,
        algo: TransformerAlgoBase[Any, Any],
        tasks: int | Sequence[str],
        target_returns: float | Mapping[str, float],
        batched: bool | None = None,
    ):
        impl = algo.impl
        if impl is None:
            raise RuntimeError("the model is not built yet: fit() or load it first")
        if algo.get_action_type() != ActionSpace.CONTINUOUS:
            raise TypeError("only continuous-action Transformer algorithms")
        self._order = TaskOrder(tasks)
        shape = impl.observation_shape
        if not isinstance(shape, Sequence) or len(shape) != 1:
            raise ValueError(f"flat observations only, got shape {shape}")
        self._obs_size = int(shape[0])  # observation + one-hot
        if self._obs_size <= self.num_tasks:
            raise ValueError(
                f"the model's observations have {self._obs_size} features: no room "
                f"for a {self.num_tasks}-task one-hot"
            )
        self._algo = algo
        self._targets = target_returns
        self._batched = (
            isinstance(algo, DecisionTransformer) if batched is None else batched
        )
        cfg = algo.config
        self._context = int(cfg.context_size)
        self._max_timestep = int(cfg.max_timestep)
        self._action_size = int(impl.action_size)
        self._device = impl.device
        self.reset(np.zeros(0, np.int64))

    @property
    def num_tasks(self) -> int:
        return self._order.num_tasks

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        # deferred: harmodt_algo.evaluation imports this module (the evaluator
        # and its re-exports), so this module cannot import it at load time
        ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)  # (N,)
        self._positions = self._order.positions(ids, task_names)  # (N,)
        names: list[str | None] = (
            [task_names[i] for i in ids.tolist()]
            if task_names is not None
            else [None] * ids.size
        )
        targets = [lookup_target_return(self._targets, name) for name in names]
        self._ctx: EpisodeContexts = EpisodeContexts(
            np.array(targets, dtype=np.float64),  # (N,)
            self._context,
            self._obs_size,
            self._action_size,
            # d3rlpy's position table has max_timestep rows: stop one short
            self._max_timestep - 1,
        )

    def act(
        self,
        observations: FloatArray,  # (N, obs)
        rewards: FloatArray,  # (N,) previous reward (0 at the start)
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> F32:  # (N, A)
        n = self._positions.size
        obs = np.asarray(observations)
        if obs.shape != (n, self._obs_size - self.num_tasks):
            raise ValueError(
                f"observations must have shape ({n}, "
                f"{self._obs_size - self.num_tasks}), got {obs.shape}; call "
                "reset() with the batch's task ids first"
            )
        out = np.zeros((n, self._action_size), np.float32)  # (N, A)
        idx = np.flatnonzero(np.asarray(active, dtype=bool))  # (n_active,)
        if idx.size == 0:
            return out
        reward = np.asarray(rewards, dtype=np.float64).reshape(-1)[idx]  # (n_active,)
        sel: slice | I64 = slice(None) if idx.size == n else idx
        one_hot = append_one_hot(obs[idx], self._positions[idx], self.num_tasks)
        self._ctx.push(idx, sel, one_hot, reward)
        if self._batched:
            action = self._predict_batched(sel)  # (n_active, A)
        else:
            action = self._predict_each(idx)  # (n_active, A)
        self._ctx.record(idx, sel, action, reward)
        out[idx] = action
        return out

    def _predict_batched(self, sel: slice | I64) -> F32:
        cfg = self._algo.config
        impl = self._algo.impl
        assert impl is not None
        obs, act, rtg, ts, mask = self._ctx.scaled(sel, cfg, self._device)
        modules: Any = impl.modules
        modules.set_eval()
        with torch.no_grad():
            # the same call as DecisionTransformerImpl.inner_predict, batched
            out = modules.transformer(obs, act, rtg, ts, 1 - mask)[:, -1]  # (n, A)
            if cfg.action_scaler is not None:
                out = cfg.action_scaler.reverse_transform(out)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def _predict_each(self, idx: I64) -> F32:
        rows = []
        for i in idx.tolist():
            ctx = self._ctx
            length = int(ctx.mask[i].sum())  # real steps in the window
            inpt = TransformerInput(
                observations=ctx.obs[i, -length:],  # (length, obs)
                actions=ctx.act[i, -length:],  # (length, A)
                rewards=ctx.rew[i, -length:],  # (length, 1)
                returns_to_go=ctx.rtg[i, -length:],  # (length, 1)
                timesteps=ctx.ts[i, -length:],  # (length,)
            )
            rows.append(np.asarray(self._algo.predict(inpt), np.float32))
        return np.stack(rows).reshape(len(rows), self._action_size)  # (n, A)
