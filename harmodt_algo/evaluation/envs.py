"""The evaluation environments, in this process or in worker processes.

Goals: Meta-World ignores ``reset(seed=...)``; the evaluation env of a task
holds the 50 held-out goals of the dataset's evaluation make-seed. Episode
``i`` of every task runs goal ``permutation(seed)[i]`` of those 50 (set with
``set_task`` before the reset), so the N episodes of a task use N different
goals and the same ``seed`` always uses the same goals. See docs/evaluation.md.
A MuJoCo recipe's task (``harmodt-recipes mujoco``) has one goal; its "goal"
``g`` is the held-out reset seed ``eval_reset_seed(recipe seed, g)``.

Workers run :func:`_worker_main` (a module-level function, so a spawn or
forkserver start can import it by its qualified name).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections import defaultdict
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from dataset_recipes import schema
from dataset_recipes.envs import GOALS_PER_MAKE_SEED, make_env
from dataset_recipes.mujoco_tasks import eval_reset_seed

from ..types import F64, I64, Bool, FloatArray

__all__ = ["MAX_EPISODES_PER_TASK", "goal_indices"]

#: Held-out goals per task (one evaluation make-seed): the most episodes per
#: task that can each run on a different goal.
MAX_EPISODES_PER_TASK = GOALS_PER_MAKE_SEED


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
        env_meta = metadata[schema.METADATA_ENV]
        # a MuJoCo recipe's seed: its held-out episode g resets with
        # eval_reset_seed(seed, g) instead of setting a goal
        self._mujoco_seed: int | None = (
            int(env_meta["seed"]) if env_meta.get("family") == "mujoco" else None
        )

    def _env(self, task: str, k: int) -> gym.Env[Any, Any]:
        envs = self._envs.setdefault(task, [])
        if self._mujoco_seed is not None:  # MuJoCo: the task's env, seeded on reset
            while len(envs) <= k:
                envs.append(make_env(self._metadata, task))
            return envs[k]
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
            if self._mujoco_seed is not None:
                obs, _ = env.reset(seed=eval_reset_seed(self._mujoco_seed, goal))
                first.append(np.asarray(obs, np.float64))
                self._current.append(env)
                continue
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
