"""Multi-task online evaluation: every task of a suite, batched, reproducible.

Why this module exists: d3rlpy evaluates one environment at a time, one
episode after another, with one forward pass per step of each episode, and on
whatever goal Meta-World happens to sample. A multi-task model has to be
scored on *every* task (spec §7: 10 episodes per task, each on a different
goal, success if ``info["success"]`` is ever true), and doing that one episode
at a time costs ``tasks × episodes × steps`` forward passes. Here all episodes
of all tasks advance together: one batched forward pass per environment step
for the whole batch, and every episode's goal is chosen explicitly, so two
evaluations of the same model give the same numbers.

Pieces:

* :class:`MultiTaskPolicy` - what the evaluator drives: a batch of
  observations and task ids in, a batch of actions out. Adapters:
  :class:`HarmoDTPolicy` (a per-episode Decision-Transformer context, the same
  semantics as d3rlpy's ``StatefulTransformerWrapper``) and
  :class:`D3rlpyOneHotPolicy` (any d3rlpy Q-learning-style algorithm, e.g. BC or
  IQL, trained on observations with a one-hot task id appended; see
  :func:`one_hot_episodes`).
* :class:`MultiTaskEvaluator` - builds the held-out evaluation environments of
  a ``dataset_recipes`` dataset once (``dataset_recipes.make_env``), keeps them
  between calls, and returns an :class:`EvaluationResult`; calling it with an
  algorithm returns flat metrics (``success_<task>``, ``return_<task>``,
  ``success_mean``, ``return_mean``) for a training loop's logger.

Goals: Meta-World ignores ``reset(seed=...)``; the evaluation env of a task
holds the 50 held-out goals of the dataset's evaluation make-seed. Episode
``i`` of every task runs goal ``permutation(seed)[i]`` of those 50 (set with
``set_task`` before the reset), so the N episodes of a task use N different
goals and the same ``seed`` always uses the same goals. See docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from d3rlpy.algos.qlearning import QLearningAlgoBase
from d3rlpy.dataset import Episode, ReplayBuffer, create_infinite_replay_buffer
from rich.table import Table

from dataset_recipes import schema
from dataset_recipes.envs import GOALS_PER_MAKE_SEED, make_env

from .data import MultiTaskDataset, as_multitask_dataset
from .harmodt import HarmoDT, scale_inputs
from .naming import metric_key
from .types import F32, F64, I64, Bool, FloatArray

__all__ = [
    "MultiTaskPolicy",
    "HarmoDTPolicy",
    "D3rlpyOneHotPolicy",
    "harmodt_batch_actions",
    "one_hot_episodes",
    "one_hot_replay_buffer",
    "EpisodeResult",
    "TaskResult",
    "EvaluationResult",
    "MultiTaskEvaluator",
    "evaluate_multitask",
    "resolve_target_returns",
    "goal_indices",
    "MAX_EPISODES_PER_TASK",
]


#: Held-out goals per task (one evaluation make-seed): the most episodes per
#: task that can each run on a different goal.
MAX_EPISODES_PER_TASK = GOALS_PER_MAKE_SEED

TargetReturns = float | Mapping[str, float] | MultiTaskDataset | None


# --------------------------------------------------------------------------- #
# Policies
# --------------------------------------------------------------------------- #


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
            weights = impl._weights(task_ids[order])
        out = impl._forward(
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
            name (see :func:`resolve_target_returns` for the dataset rule).
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


class D3rlpyOneHotPolicy:
    """A d3rlpy Q-learning-style algorithm (BC, IQL, CQL, ...) trained on
    ``concat(observation, one_hot(task))``, as a :class:`MultiTaskPolicy`.

    One ``algo.predict`` call per env step for the whole batch.

    Args:
        algo: a built d3rlpy algorithm with ``predict(x (N, obs + T)) -> (N, A)``.
        tasks: the one-hot order used in training: the number of tasks (the
            one-hot position is the suite task id, as :func:`one_hot_episodes`
            writes it for a dataset in suite order) or the task names in that
            order (positions are looked up by name).
    """

    def __init__(self, algo: QLearningAlgoBase[Any, Any], tasks: int | Sequence[str]):
        if isinstance(tasks, (int, np.integer)):
            if int(tasks) <= 0:
                raise ValueError(f"num_tasks must be > 0, got {tasks}")
            self._num_tasks = int(tasks)
            self._order: list[str] | None = None
        else:
            self._order = [str(t) for t in tasks]
            if not self._order:
                raise ValueError("tasks is empty")
            self._num_tasks = len(self._order)
        self._algo = algo
        self._positions = np.zeros(0, np.int64)

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)  # (N,)
        if self._order is None or task_names is None:
            if ids.size and (ids.min() < 0 or ids.max() >= self._num_tasks):
                raise ValueError(
                    f"task ids must be in [0, {self._num_tasks}), got {ids}"
                )
            self._positions = ids
            return
        names = [task_names[i] for i in ids.tolist()]
        unknown = sorted(set(names) - set(self._order))
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown}; the policy knows: {self._order}"
            )
        self._positions = np.array(
            [self._order.index(name) for name in names], dtype=np.int64
        )

    def act(
        self,
        observations: FloatArray,  # (N, obs)
        rewards: FloatArray,  # (N,) unused: the policy is Markovian
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> F32:  # (N, A)
        obs = np.asarray(observations, dtype=np.float32)
        idx = np.flatnonzero(np.asarray(active, dtype=bool))  # (n_active,)
        onehot = np.eye(self._num_tasks, dtype=np.float32)[self._positions[idx]]
        x = np.concatenate([obs[idx], onehot], axis=1)  # (n_active, obs + T)
        action = np.asarray(self._algo.predict(x), dtype=np.float32)  # (n_active, A)
        out = np.zeros((obs.shape[0], action.shape[1]), np.float32)  # (N, A)
        out[idx] = action
        return out


def one_hot_episodes(dataset: Any) -> list[Episode]:
    """Every episode with the task's one-hot id appended to each observation.

    ``dataset``: a ``MultiTaskDataset`` or anything ``as_multitask_dataset``
    accepts; the one-hot position is the dataset's task index (its
    ``task_names`` order, which for a recipe dataset is the suite order).
    Observations become (T, obs + num_tasks) float32: train a d3rlpy BC/IQL on
    them and evaluate it with :class:`D3rlpyOneHotPolicy`.
    """
    data = as_multitask_dataset(dataset)
    eye = np.eye(data.num_tasks, dtype=np.float32)
    out: list[Episode] = []
    for t, episodes in enumerate(data.episodes):
        for ep in episodes:
            obs = np.asarray(ep.observations, np.float32)  # (T, obs)
            onehot = np.repeat(eye[t : t + 1], obs.shape[0], axis=0)  # (T, num_tasks)
            out.append(
                Episode(
                    observations=np.concatenate([obs, onehot], axis=1),
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
# Results
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """One episode: which goal, whether it ever succeeded, its return."""

    task: str
    index: int  # episode number within the task
    goal: int  # index into the task's held-out goals
    success: bool  # info["success"] was true at some step
    episode_return: float
    length: int  # env steps taken


@dataclasses.dataclass(frozen=True)
class TaskResult:
    task: str
    episodes: tuple[EpisodeResult, ...]

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes]))

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.episode_return for e in self.episodes]))


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Per-task success rate and mean return, and their means over tasks.

    The means over tasks weight every task equally (spec §7).
    ``elapsed_s`` is wall time and takes no part in equality.
    """

    tasks: tuple[TaskResult, ...]
    n_episodes: int
    seed: int
    env_steps: int
    elapsed_s: float = dataclasses.field(default=0.0, compare=False)

    def __getitem__(self, task: str) -> TaskResult:
        for result in self.tasks:
            if result.task == task:
                return result
        raise KeyError(f"{task!r}; evaluated tasks: {self.task_names}")

    @property
    def task_names(self) -> list[str]:
        return [r.task for r in self.tasks]

    @property
    def success_mean(self) -> float:
        return float(np.mean([r.success_rate for r in self.tasks]))

    @property
    def return_mean(self) -> float:
        return float(np.mean([r.mean_return for r in self.tasks]))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a logger (one d3rlpy CSV per name)."""
        out: dict[str, float] = {}
        for r in self.tasks:
            out[metric_key("success", r.task)] = r.success_rate
            out[metric_key("return", r.task)] = r.mean_return
        out["success_mean"] = self.success_mean
        out["return_mean"] = self.return_mean
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with every episode."""
        return {
            "n_episodes": self.n_episodes,
            "seed": self.seed,
            "env_steps": self.env_steps,
            "elapsed_s": self.elapsed_s,
            "success_mean": self.success_mean,
            "return_mean": self.return_mean,
            "tasks": {
                r.task: {
                    "success_rate": r.success_rate,
                    "mean_return": r.mean_return,
                    "episodes": [
                        {
                            "goal": e.goal,
                            "success": e.success,
                            "return": e.episode_return,
                            "length": e.length,
                        }
                        for e in r.episodes
                    ],
                }
                for r in self.tasks
            },
        }

    def table(self, title: str | None = None) -> Table:
        """A rich table: one row per task, then the mean over tasks."""
        default = (
            f"{len(self.tasks)} tasks × {self.n_episodes} episodes (seed {self.seed})"
        )
        table = Table(title=title or default)
        table.add_column("task")
        table.add_column("episodes", justify="right")
        table.add_column("success %", justify="right")
        table.add_column("mean return", justify="right")
        for r in self.tasks:
            table.add_row(
                r.task,
                str(len(r.episodes)),
                f"{100 * r.success_rate:.1f}",
                f"{r.mean_return:.1f}",
            )
        table.add_section()
        table.add_row(
            "mean over tasks",
            "",
            f"{100 * self.success_mean:.1f}",
            f"{self.return_mean:.1f}",
            style="bold",
        )
        return table


# --------------------------------------------------------------------------- #
# Environments (in this process or in workers)
# --------------------------------------------------------------------------- #


def goal_indices(n_episodes: int, seed: int) -> list[int]:
    """Held-out goal of episode ``i`` (the same for every task): distinct goals,
    a function of ``seed`` only."""
    if not 0 < n_episodes <= MAX_EPISODES_PER_TASK:
        raise ValueError(
            f"n_episodes must be in [1, {MAX_EPISODES_PER_TASK}] (each episode "
            f"runs a different held-out goal), got {n_episodes}"
        )
    perm = np.random.default_rng(seed).permutation(MAX_EPISODES_PER_TASK)
    return [int(g) for g in perm[:n_episodes]]


def _goal_selector(env: gym.Env[Any, Any]) -> Any:
    """Meta-World's task-select wrapper in ``env``'s chain (holds the goals)."""
    layer: Any = env
    while layer is not None:
        if hasattr(layer, "tasks") and hasattr(layer, "toggle_sample_tasks_on_reset"):
            return layer
        layer = getattr(layer, "env", None)
    raise TypeError(
        "the evaluation env has no Meta-World task-select wrapper; only "
        "dataset_recipes (Meta-World) datasets are supported"
    )


class _EnvShard:
    """The environments of one process, built on demand and kept.

    A task's first env comes from ``make_env`` (its goals are the dataset's
    held-out ones, sampled once by Meta-World: ~0.5-1 s); further envs of the
    same task are the bare env class with the same goals and time limit
    (~0.1 s; their episodes are bit-identical to ``make_env``'s, see tests).
    """

    def __init__(self, metadata: Mapping[str, Any]):
        self._metadata = metadata
        self._envs: dict[str, list[gym.Env[Any, Any]]] = {}
        self._goals: dict[str, list[Any]] = {}
        self._limits: dict[str, int] = {}
        self._current: list[gym.Env[Any, Any]] = []
        self._obs: F64 = np.zeros((0, 0))

    def _env(self, task: str, k: int) -> gym.Env[Any, Any]:
        envs = self._envs.setdefault(task, [])
        while len(envs) <= k:
            if not envs:
                # Meta-World re-seeds numpy's global RNG when it samples goals
                state = np.random.get_state()
                try:
                    env = make_env(self._metadata, task)
                finally:
                    np.random.set_state(state)
                selector = _goal_selector(env)
                selector.toggle_sample_tasks_on_reset(False)
                self._goals[task] = list(selector.tasks)
                assert env.spec is not None and env.spec.max_episode_steps
                self._limits[task] = int(env.spec.max_episode_steps)
            else:
                raw = type(envs[0].unwrapped)()
                env = gym.wrappers.TimeLimit(raw, self._limits[task])
            envs.append(env)
        return envs[k]

    def start(self, episodes: Sequence[tuple[str, int]]) -> F64:
        """Reset one env per ``(task, goal)``; returns first observations (n, obs)."""
        used: dict[str, int] = defaultdict(int)
        self._current = []
        first = []
        for task, goal in episodes:
            env = self._env(task, used[task])
            used[task] += 1
            goals = self._goals[task]
            if not 0 <= goal < len(goals):
                raise ValueError(f"goal {goal} out of range for {len(goals)} goals")
            env.unwrapped.set_task(goals[goal])  # type: ignore[attr-defined]
            obs, _ = env.reset()
            first.append(np.asarray(obs, np.float64))
            self._current.append(env)
        self._obs = np.stack(first) if first else np.zeros((0, 0))  # (n, obs)
        return self._obs.copy()

    def step(
        self,
        actions: FloatArray,  # (n, A)
        active: Bool,  # (n,)
    ) -> tuple[F64, F64, Bool, Bool]:
        """Step the active envs: observations (n, obs), rewards (n,),
        done (n,) (terminated or truncated) and success (n,)."""
        n = len(self._current)
        rewards = np.zeros(n, np.float64)
        done = np.zeros(n, bool)
        success = np.zeros(n, bool)
        for i in np.flatnonzero(active):
            obs, reward, terminated, truncated, info = self._current[i].step(actions[i])
            self._obs[i] = obs
            rewards[i] = float(reward)
            done[i] = bool(terminated or truncated)
            success[i] = bool(float(info.get("success", 0.0)) > 0.0)
        return self._obs.copy(), rewards, done, success

    def close(self) -> None:
        for envs in self._envs.values():
            for env in envs:
                env.close()
        self._envs.clear()
        self._current = []


def _worker_main(conn: Connection, metadata: Mapping[str, Any]) -> None:
    """A worker process: owns an ``_EnvShard`` and serves start/step/close."""
    shard = _EnvShard(metadata)
    try:
        while True:
            command, payload = conn.recv()
            try:
                if command == "start":
                    conn.send(("ok", shard.start(payload)))
                elif command == "step":
                    conn.send(("ok", shard.step(*payload)))
                elif command == "close":
                    conn.send(("ok", None))
                    break
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        shard.close()
        conn.close()


class _Stepper(Protocol):
    def start(self, episodes: Sequence[tuple[str, int]]) -> F64: ...

    def step(
        self, actions: FloatArray, active: Bool
    ) -> tuple[F64, F64, Bool, Bool]: ...

    def close(self) -> None: ...


class _ProcessStepper:
    """Envs split over worker processes (episode ``i`` → worker ``i % W``)."""

    def __init__(self, metadata: Mapping[str, Any], workers: int):
        methods = mp.get_all_start_methods()
        # workers never touch torch, so fork (fast start) is safe where it exists
        ctx: Any = mp.get_context("fork" if "fork" in methods else "spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, metadata), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._parts: list[I64] = []
        self._obs_size = 0

    def _call(self, w: int) -> Any:
        status, value = self._conns[w].recv()
        if status != "ok":
            raise RuntimeError(f"evaluation worker {w} failed:\n{value}")
        return value

    def start(self, episodes: Sequence[tuple[str, int]]) -> F64:
        n, workers = len(episodes), len(self._conns)
        self._parts = [np.arange(w, n, workers) for w in range(workers)]
        for w, part in enumerate(self._parts):
            self._conns[w].send(("start", [episodes[i] for i in part]))
        results = [self._call(w) for w in range(workers)]
        self._obs_size = max(r.shape[1] for r in results if r.size)
        obs = np.zeros((n, self._obs_size))  # (n, obs)
        for part, r in zip(self._parts, results, strict=True):
            if part.size:
                obs[part] = r
        return obs

    def step(self, actions: FloatArray, active: Bool) -> tuple[F64, F64, Bool, Bool]:
        n = actions.shape[0]
        for w, part in enumerate(self._parts):
            self._conns[w].send(("step", (actions[part], active[part])))
        obs = np.zeros((n, self._obs_size))  # (n, obs)
        rewards = np.zeros(n)  # (n,)
        done = np.zeros(n, bool)  # (n,)
        success = np.zeros(n, bool)  # (n,)
        for w, part in enumerate(self._parts):
            o, r, d, s = self._call(w)
            if part.size:
                obs[part], rewards[part], done[part], success[part] = o, r, d, s
        return obs, rewards, done, success

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (OSError, EOFError, BrokenPipeError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []


# --------------------------------------------------------------------------- #
# The evaluator
# --------------------------------------------------------------------------- #


def resolve_target_returns(
    tasks: Sequence[str],
    target_returns: TargetReturns,
    dataset: MultiTaskDataset | None = None,
) -> dict[str, float]:
    """The target (initial return-to-go) of each task.

    Rule: a float is used for every task; a mapping must name every task; with
    ``None`` each task gets its best episode return in ``dataset``
    (``MultiTaskDataset.max_return``, the usual Decision-Transformer practice),
    and so does a ``MultiTaskDataset`` passed as ``target_returns``.
    """
    if isinstance(target_returns, MultiTaskDataset):
        dataset, target_returns = target_returns, None
    if target_returns is None:
        if dataset is None:
            raise ValueError(
                "no target returns: pass target_returns (a float or a per-task "
                "mapping) or the dataset they come from"
            )
        missing = [t for t in tasks if t not in dataset.task_names]
        if missing:
            raise ValueError(
                f"the dataset has no episodes of {missing} to take a target return "
                f"from; its tasks: {list(dataset.task_names)}"
            )
        return {t: dataset.max_return(t) for t in tasks}
    if isinstance(target_returns, Mapping):
        missing = [t for t in tasks if t not in target_returns]
        if missing:
            raise ValueError(
                f"target_returns has no entry for {missing}; it has "
                f"{sorted(target_returns)}"
            )
        return {t: float(target_returns[t]) for t in tasks}
    return {t: float(target_returns) for t in tasks}


def _split_source(source: Any) -> tuple[dict[str, Any], Any]:
    """(the env part of the metadata, the Minari dataset or None)."""
    dataset = None
    if isinstance(source, str):
        import minari

        dataset = minari.load_dataset(source)
        metadata: Mapping[str, Any] = dataset.storage.metadata
    elif isinstance(source, Mapping):
        metadata = source
    elif getattr(source, "storage", None) is not None:
        dataset = source
        metadata = source.storage.metadata
    else:
        raise TypeError(
            "expected a dataset_recipes MinariDataset, its id, or its metadata "
            f"mapping; got {type(source).__name__}"
        )
    if schema.METADATA_ENV not in metadata or schema.METADATA_TASKS not in metadata:
        raise ValueError(
            f"the metadata has no {schema.METADATA_ENV!r} / "
            f"{schema.METADATA_TASKS!r}: not a dataset_recipes dataset"
        )
    # only what make_env needs: small and picklable (for worker processes)
    slim = {
        schema.METADATA_TASKS: [str(t) for t in metadata[schema.METADATA_TASKS]],
        schema.METADATA_ENV: dict(metadata[schema.METADATA_ENV]),
    }
    return slim, dataset


class MultiTaskEvaluator:
    """Evaluate a multi-task policy on every task of a recipe dataset.

    .. code-block:: python

        evaluator = MultiTaskEvaluator(dataset, n_episodes=10)
        result = evaluator.evaluate(algo)   # EvaluationResult
        rich.print(result.table())
        metrics = evaluator(algo)           # {"success_reach-v3": 1.0, ...}

    Args:
        dataset_or_metadata: a ``dataset_recipes`` Minari dataset, its id, or its
            metadata mapping (then ``target_returns`` is needed for HarmoDT).
        tasks: the tasks to evaluate (default: all of the dataset's).
        n_episodes: episodes per task, each on a different held-out goal (≤ 50).
        seed: picks the goals (:func:`goal_indices`); same seed, same numbers.
        max_steps: cut episodes at this many steps (default: the env's limit).
        target_returns: HarmoDT's target per task (see
            :func:`resolve_target_returns`; default: the dataset's best return).
        workers: 0 steps the envs in this process; ``W > 0`` in W processes.
        max_parallel: most episodes in flight at once (bounds memory: each
            Meta-World env holds ~20 MB); episodes beyond it run in later waves.

    The environments (and worker processes) are built on first use and kept
    for later calls; ``close()`` (or ``with``) releases them.
    """

    def __init__(
        self,
        dataset_or_metadata: Any,
        tasks: Sequence[str] | None = None,
        n_episodes: int = 10,
        seed: int = 0,
        max_steps: int | None = None,
        target_returns: TargetReturns = None,
        workers: int = 0,
        max_parallel: int = 100,
    ):
        self._metadata, self._minari = _split_source(dataset_or_metadata)
        self.suite_tasks: list[str] = list(self._metadata[schema.METADATA_TASKS])
        if tasks is None:
            tasks = list(self.suite_tasks)
        if isinstance(tasks, str):
            tasks = [tasks]
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in self.suite_tasks]
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown}; known tasks: {self.suite_tasks}"
            )
        if not tasks:
            raise ValueError(f"no tasks to evaluate; known tasks: {self.suite_tasks}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks has duplicates: {tasks}")
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, int):
            raise TypeError(f"n_episodes must be an int, got {n_episodes!r}")
        self.goals = goal_indices(n_episodes, seed)  # validates n_episodes
        if max_steps is not None and max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {max_steps}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if max_parallel <= 0:
            raise ValueError(f"max_parallel must be > 0, got {max_parallel}")
        if isinstance(target_returns, Mapping):
            resolve_target_returns(tasks, target_returns)  # fail fast
        self.tasks = tasks
        self.n_episodes = n_episodes
        self.seed = seed
        self.max_steps = max_steps
        self.workers = workers
        self.max_parallel = max_parallel
        self._target_returns = target_returns
        self._dataset: MultiTaskDataset | None = None
        self._stepper: _Stepper | None = None
        self.last_result: EvaluationResult | None = None

    # ---------------------------------------------------------------- targets
    def target_returns(self) -> dict[str, float]:
        """HarmoDT's target return per evaluated task (the documented rule)."""
        target = self._target_returns
        if target is None and self._dataset is None:
            if self._minari is None:
                raise ValueError(
                    "no target returns: this evaluator was given dataset metadata "
                    "only; pass target_returns (a float or a per-task mapping) or "
                    "the dataset itself"
                )
            self._dataset = as_multitask_dataset(self._minari)
        return resolve_target_returns(self.tasks, target, self._dataset)

    def policy_for(self, agent: Any) -> MultiTaskPolicy:
        """``agent`` as a policy: HarmoDT → :class:`HarmoDTPolicy`, a d3rlpy
        Q-learning-style algorithm → :class:`D3rlpyOneHotPolicy` (one-hot over
        the dataset's tasks), a :class:`MultiTaskPolicy` → itself."""
        if isinstance(agent, HarmoDT):
            return HarmoDTPolicy(agent, self.target_returns())
        if isinstance(agent, QLearningAlgoBase):
            return D3rlpyOneHotPolicy(agent, len(self.suite_tasks))
        if isinstance(agent, MultiTaskPolicy):
            return agent
        raise TypeError(
            f"cannot evaluate a {type(agent).__name__}: pass a HarmoDT, a d3rlpy "
            "Q-learning-style algorithm, or a MultiTaskPolicy"
        )

    # ------------------------------------------------------------- evaluation
    def _get_stepper(self) -> _Stepper:
        if self._stepper is None:
            if self.workers > 0:
                self._stepper = _ProcessStepper(self._metadata, self.workers)
            else:
                self._stepper = _EnvShard(self._metadata)
        return self._stepper

    def plan(self) -> list[tuple[str, int, int]]:
        """Every episode as ``(task, episode index, goal)``, in run order
        (episode-major, so each wave mixes all tasks)."""
        return [
            (task, i, goal) for i, goal in enumerate(self.goals) for task in self.tasks
        ]

    def evaluate(self, agent: Any) -> EvaluationResult:
        """Run every episode of every task; see :class:`EvaluationResult`."""
        policy = self.policy_for(agent)
        stepper = self._get_stepper()
        plan = self.plan()
        start = time.perf_counter()
        results: dict[str, list[EpisodeResult]] = {t: [] for t in self.tasks}
        total_steps = 0
        for first in range(0, len(plan), self.max_parallel):
            wave = plan[first : first + self.max_parallel]
            for res in self._run_wave(policy, stepper, wave):
                results[res.task].append(res)
                total_steps += res.length
        task_results = tuple(
            TaskResult(t, tuple(sorted(results[t], key=lambda e: e.index)))
            for t in self.tasks
        )
        self.last_result = EvaluationResult(
            tasks=task_results,
            n_episodes=self.n_episodes,
            seed=self.seed,
            env_steps=total_steps,
            elapsed_s=time.perf_counter() - start,
        )
        return self.last_result

    def _run_wave(
        self,
        policy: MultiTaskPolicy,
        stepper: _Stepper,
        wave: Sequence[tuple[str, int, int]],
    ) -> list[EpisodeResult]:
        n = len(wave)
        task_ids = np.array(
            [self.suite_tasks.index(task) for task, _, _ in wave], np.int64
        )  # (N,)
        policy.reset(task_ids, self.suite_tasks)
        obs = stepper.start([(task, goal) for task, _, goal in wave])  # (N, obs)
        rewards = np.zeros(n)  # (N,) previous reward
        returns = np.zeros(n)  # (N,)
        lengths = np.zeros(n, np.int64)  # (N,)
        success = np.zeros(n, bool)  # (N,) ever succeeded
        active = np.ones(n, bool)  # (N,)
        limit = self.max_steps
        while active.any():
            actions = policy.act(obs, rewards, task_ids, active)  # (N, A)
            obs, rewards, done, succ = stepper.step(np.asarray(actions), active)
            rewards = np.where(active, rewards, 0.0)
            returns += rewards
            lengths += active
            success |= succ & active
            if limit is not None:
                done |= lengths >= limit
            active &= ~done
        return [
            EpisodeResult(
                task=task,
                index=index,
                goal=goal,
                success=bool(success[i]),
                episode_return=float(returns[i]),
                length=int(lengths[i]),
            )
            for i, (task, index, goal) in enumerate(wave)
        ]

    def __call__(self, algo: Any, dataset: Any = None) -> dict[str, float]:
        """Training hook: evaluate ``algo`` and return flat metrics
        (``success_<task>``, ``return_<task>``, ``success_mean``,
        ``return_mean``). ``dataset`` is accepted (and ignored) for d3rlpy's
        evaluator signature."""
        return self.evaluate(algo).metrics()

    # -------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the environments and stop worker processes."""
        stepper = getattr(self, "_stepper", None)  # None if __init__ failed
        if stepper is not None:
            self._stepper = None
            stepper.close()

    def __enter__(self) -> MultiTaskEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: best effort
            warnings.warn("MultiTaskEvaluator.close() failed", stacklevel=1)

    def __repr__(self) -> str:
        return (
            f"MultiTaskEvaluator(tasks={self.tasks}, n_episodes={self.n_episodes}, "
            f"seed={self.seed}, max_steps={self.max_steps}, workers={self.workers})"
        )


def evaluate_multitask(
    agent: Any,
    dataset_or_metadata: Any,
    *,
    tasks: Sequence[str] | None = None,
    n_episodes: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    target_returns: TargetReturns = None,
    workers: int = 0,
    max_parallel: int = 100,
) -> EvaluationResult:
    """One-shot :class:`MultiTaskEvaluator` (envs are closed afterwards)."""
    with MultiTaskEvaluator(
        dataset_or_metadata,
        tasks=tasks,
        n_episodes=n_episodes,
        seed=seed,
        max_steps=max_steps,
        target_returns=target_returns,
        workers=workers,
        max_parallel=max_parallel,
    ) as evaluator:
        return evaluator.evaluate(agent)
