"""The sliding context a Decision Transformer acts from, for N episodes at once.

Both acting adapters (HarmoDT's, in :mod:`harmodt_algo.evaluation.policies`,
and d3rlpy's DecisionTransformer with a one-hot task, in
:mod:`harmodt_algo.one_hot`) keep their windows here, so both follow d3rlpy's
``StatefulTransformerWrapper`` semantics exactly; it sits below both so that
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .scaling import scale_inputs
from .types import F32, F64, I64, FloatArray

__all__ = ["EpisodeContexts", "lookup_target_return"]


def lookup_target_return(
    targets: float | Mapping[str, float], task: str | None
) -> float:
    """The initial return-to-go of ``task``: one value for all, or per task."""
    if not isinstance(targets, Mapping):
        return float(targets)
    if task is None:
        raise ValueError(
            "per-task target returns need task names: call reset(task_ids, task_names)"
        )
    if task not in targets:
        raise ValueError(
            f"no target return for task {task!r}; given for: {sorted(targets)}"
        )
    return float(targets[task])


class EpisodeContexts:
    """Per-episode sliding windows of a Decision Transformer, N at once.

    Mirrors d3rlpy's ``StatefulTransformerWrapper`` for every episode: the
    return-to-go starts at the target and drops by each reward, timesteps start
    at 1 and stop at ``timestep_cap``, the current step's action slot is zeros,
    short windows are left-padded with zeros and mask 0. Shared by the HarmoDT
    and d3rlpy-transformer adapters so both keep exactly the same semantics.
    """

    def __init__(
        self,
        targets: F64,  # (N,) initial returns-to-go
        context: int,
        observation_size: int,
        action_size: int,
        timestep_cap: int,
    ):
        n, k = targets.size, context
        self.return_rest = targets.astype(np.float64)  # (N,)
        self.timestep = np.ones(n, np.int64)  # (N,) next timestep, from 1
        self.timestep_cap = timestep_cap
        self.obs = np.zeros((n, k, observation_size), np.float32)  # (N, K, obs)
        self.act = np.zeros((n, k, action_size), np.float32)  # (N, K, A)
        self.rew = np.zeros((n, k, 1), np.float32)  # (N, K, 1)
        self.rtg = np.zeros((n, k, 1), np.float32)  # (N, K, 1)
        self.ts = np.zeros((n, k), np.int64)  # (N, K)
        self.mask = np.zeros((n, k), np.float32)  # (N, K)

    def push(
        self, idx: I64, sel: slice | I64, observations: FloatArray, rewards: F64
    ) -> None:
        """Slide the ``idx`` windows left and append the new step."""
        for window in (self.obs, self.act, self.rew, self.rtg, self.ts, self.mask):
            window[sel, :-1] = window[sel, 1:]
        self.obs[sel, -1] = observations
        self.act[sel, -1] = 0.0  # the pad action of the step being predicted
        self.rew[sel, -1, 0] = rewards
        self.rtg[sel, -1, 0] = self.return_rest[idx] - rewards
        self.ts[sel, -1] = self.timestep[idx]
        self.mask[sel, -1] = 1.0

    def record(self, idx: I64, sel: slice | I64, actions: F32, rewards: F64) -> None:
        """Store the chosen actions and advance timesteps and returns-to-go."""
        self.act[sel, -1] = actions
        self.timestep[idx] = np.minimum(self.timestep[idx] + 1, self.timestep_cap)
        self.return_rest[idx] -= rewards

    def scaled(
        self, sel: slice | I64, config: Any, device: str
    ) -> tuple[torch.Tensor, ...]:
        """(obs, act, rtg, ts, mask) tensors of the ``sel`` rows, with the
        config's scalers applied to the whole padded window (as
        ``TorchTransformerInput.from_numpy``)."""
        obs = torch.from_numpy(self.obs[sel]).to(device)  # (n, K, obs)
        act = torch.from_numpy(self.act[sel]).to(device)  # (n, K, A)
        rtg = torch.from_numpy(self.rtg[sel]).to(device)  # (n, K, 1)
        ts = torch.from_numpy(self.ts[sel]).to(device)  # (n, K)
        mask = torch.from_numpy(self.mask[sel]).to(device)  # (n, K)
        obs, act, rtg = scale_inputs(config, obs, act, rtg)
        return obs, act, rtg, ts, mask
