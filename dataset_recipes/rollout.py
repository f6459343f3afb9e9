"""One episode, one chunk of episodes, one set of reference rollouts.

Why: this is the only code that steps environments. Every episode is a pure
function of ``(task, seed, quality, episode index, episode length)``: the goal
comes from :func:`dataset_recipes.envs.train_goal`, the behaviour from a
per-episode ``np.random.default_rng`` seeded with
``SeedSequence([seed, stable_key(task), quality.stream, episode_index])``.
Workers run whole chunks (consecutive episodes of one task) and write them to
the staging folder atomically, so results never depend on the number of
workers or on which worker ran what.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .envs import GoalEnvCache, eval_make_seed, stable_key, train_goal
from .qualities import Quality, get_quality, plan_episode

#: Episodes per policy and task used for ``ref_min_score`` / ``ref_max_score``.
REF_EPISODES = 5
#: Seed-sequence stream ids that are not episode indices.
_PHASE_STREAM = 2**31 - 1
_REF_STREAM = 2**31 - 2


def episode_rng(
    seed: int, task: str, stream: int, episode_index: int
) -> np.random.Generator:
    """The RNG of one episode; stable across processes, runs and machines."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, stable_key(task), stream, episode_index])
    )


def stratification_phase(seed: int, task: str, quality: Quality) -> float:
    """Per-(seed, task, quality) phase of the stratified degraded-episode rule."""
    return float(episode_rng(seed, task, quality.stream, _PHASE_STREAM).random())


def expert_policy(task: str) -> Any:
    """Meta-World's scripted expert of ``task`` (one place that builds it)."""
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()  # type: ignore[abstract]


@dataclass
class EpisodeResult:
    """Arrays of one episode (T steps) in Minari's layout."""

    observations: np.ndarray  # (T+1, 39) float32
    actions: np.ndarray  # (T, 4) float32, exactly the actions executed
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool, always False in Meta-World
    truncations: np.ndarray  # (T,) bool, True at the last step
    success: np.ndarray  # (T+1,) float32, Meta-World's per-step success (0 at reset)
    episode_index: int
    make_seed: int
    goal_index: int
    degraded: bool
    noise_std: float

    @classmethod
    def timed_out(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        success: np.ndarray,
        *,
        episode_index: int,
        make_seed: int,
        goal_index: int,
        degraded: bool = False,
        noise_std: float = float("nan"),
    ) -> EpisodeResult:
        """An episode that ran to its time limit: Meta-World never terminates,
        so it is truncated at its last step and nowhere else."""
        steps = len(actions)
        truncations = np.zeros(steps, dtype=bool)
        truncations[-1] = True
        return cls(
            observations=observations,
            actions=actions,
            rewards=rewards,
            terminations=np.zeros(steps, dtype=bool),
            truncations=truncations,
            success=success,
            episode_index=episode_index,
            make_seed=make_seed,
            goal_index=goal_index,
            degraded=degraded,
            noise_std=noise_std,
        )

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

    @property
    def solved(self) -> bool:
        """Success at any step (the standard Meta-World metric)."""
        return bool(self.success.max() > 0)


class EpisodeRecorder:
    """One episode's arrays in Minari's layout, filled as the env steps:
    what the scripted rollouts and the SAC learner both record."""

    def __init__(
        self,
        env: Any,
        steps: int,
        obs_dtype: Any,
        observation_size: int = 39,
        action_size: int = 4,
        reset_seed: int | None = None,
    ) -> None:
        self.env = env
        self.obs = np.empty((steps + 1, observation_size), dtype=obs_dtype)  # (T+1, O)
        self.actions = np.empty((steps, action_size), dtype=np.float32)  # (T, A)
        self.rewards = np.empty(steps, dtype=np.float64)  # (T,)
        self.success = np.zeros(steps + 1, dtype=np.float32)  # (T+1,), 0 at reset
        self.length = 0  # steps taken
        self.terminated = False  # the last step ended the episode (MuJoCo's ant)
        self.obs[0], _ = env.reset(seed=reset_seed)

    def step(self, t: int, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Execute ``action`` as step ``t`` (stored as float32, exactly as
        executed); returns the next observation and the reward."""
        self.actions[t] = action
        o, r, terminated, _, info = self.env.step(self.actions[t])
        self.obs[t + 1] = o
        self.rewards[t] = float(r)
        self.success[t + 1] = float(info.get("success", 0.0))
        self.length = t + 1
        self.terminated = bool(terminated)
        return o, float(r)

    def episode(self, *, episode_index: int, make_seed: int) -> EpisodeResult:
        """The steps taken so far as an episode: terminated at its last step,
        or truncated there (the time limit)."""
        n = self.length
        terminations = np.zeros(n, dtype=bool)
        truncations = np.zeros(n, dtype=bool)
        (terminations if self.terminated else truncations)[-1] = True
        return EpisodeResult(
            observations=self.obs[: n + 1],
            actions=self.actions[:n],
            rewards=self.rewards[:n],
            terminations=terminations,
            truncations=truncations,
            success=self.success[: n + 1],
            episode_index=episode_index,
            make_seed=make_seed,
            goal_index=-1,
            degraded=False,
            noise_std=float("nan"),
        )


def _run(
    env: Any,
    policy: Any,
    steps: int,
    random_mask: np.ndarray,
    noise: np.ndarray,
    random_actions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rec = EpisodeRecorder(env, steps, np.float64)
    o = rec.obs[0]
    with warnings.catch_warnings():
        # The scripted experts warn that their gains exceed the action bounds.
        warnings.simplefilter("ignore", UserWarning)
        for t in range(steps):
            if random_mask[t]:
                a = random_actions[t]
            else:
                a = np.clip(policy.get_action(o) + noise[t], -1.0, 1.0)
            o, _ = rec.step(t, a)
    return rec.obs, rec.actions, rec.rewards, rec.success


def rollout_episode(
    task: str,
    seed: int,
    episode_index: int,
    quality: Quality | str,
    max_episode_steps: int = 500,
    *,
    cache: GoalEnvCache | None = None,
) -> EpisodeResult:
    """Generate training episode ``episode_index`` of ``task`` (deterministic)."""
    q = get_quality(quality) if isinstance(quality, str) else quality
    own_cache = cache is None
    cache = cache or GoalEnvCache(capacity=1)
    try:
        make_seed, goal = train_goal(seed, episode_index)
        rng = episode_rng(seed, task, q.stream, episode_index)
        plan = plan_episode(
            q,
            rng,
            phase=stratification_phase(seed, task, q),
            episode_index=episode_index,
            steps=max_episode_steps,
        )
        noise = rng.standard_normal((max_episode_steps, 4)) * plan.noise_std
        random_actions = rng.uniform(-1.0, 1.0, (max_episode_steps, 4))
        env = cache.get(task, make_seed, goal)
        obs, actions, rewards, success = _run(
            env,
            expert_policy(task),
            max_episode_steps,
            plan.random_mask(max_episode_steps),
            noise,
            random_actions,
        )
    finally:
        if own_cache:
            cache.close()
    return EpisodeResult.timed_out(
        obs.astype(np.float32),
        actions,
        rewards,
        success,
        episode_index=episode_index,
        make_seed=make_seed,
        goal_index=goal,
        degraded=plan.degraded,
        noise_std=plan.noise_std,
    )


def reference_rollouts(
    task: str,
    seed: int,
    max_episode_steps: int = 500,
    episodes: int = REF_EPISODES,
    *,
    cache: GoalEnvCache | None = None,
) -> dict[str, np.ndarray]:
    """Returns of a uniform random policy and of the noise-free scripted expert.

    Run on the first ``episodes`` held-out evaluation goals (Minari's convention:
    reference scores are measured in the evaluation environment). These give
    ``ref_min_score`` / ``ref_max_score``; they do not depend on the quality.
    """
    own_cache = cache is None
    cache = cache or GoalEnvCache(capacity=1)
    random_returns = np.empty(episodes)
    expert_returns = np.empty(episodes)
    expert_solved = np.empty(episodes)
    policy = expert_policy(task)
    try:
        for k in range(episodes):
            rng = episode_rng(seed, task, _REF_STREAM, k)
            rand = rng.uniform(-1.0, 1.0, (max_episode_steps, 4))
            zeros = np.zeros((max_episode_steps, 4))
            for random_policy in (True, False):  # every step random / none
                env = cache.get(task, eval_make_seed(seed), k)
                mask = np.full(max_episode_steps, random_policy)
                _, _, r, s = _run(env, policy, max_episode_steps, mask, zeros, rand)
                if random_policy:
                    random_returns[k] = r.sum()
                else:
                    expert_returns[k] = r.sum()
                    expert_solved[k] = float(s.max() > 0)
    finally:
        if own_cache:
            cache.close()
    return {
        "random_returns": random_returns,
        "expert_returns": expert_returns,
        "expert_success": expert_solved,
    }


def refs_file(folder: Path, task: str, seed: int, max_episode_steps: int) -> Path:
    """Where a task's reference rollouts are staged. They depend on neither the
    quality nor the episode count, so every build with the same seed and
    episode length (scripted or replay) shares the file."""
    return folder / f"{task}-seed{seed}-steps{max_episode_steps}.npz"


def read_refs(path: str | Path) -> dict[str, float]:
    """A staged reference file as the dataset's per-task reference scores."""
    with np.load(path) as z:
        return {
            "ref_min_score": float(z["random_returns"].mean()),
            "ref_max_score": float(z["expert_returns"].mean()),
            "expert_success_rate": float(z["expert_success"].mean()),
            "episodes": int(len(z["random_returns"])),
        }


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class WorkItem:
    """A unit of work for one worker: a chunk of episodes, or a task's references."""

    kind: str  # "episodes" or "refs"
    task: str
    first: int
    count: int
    seed: int
    quality: str
    max_episode_steps: int
    path: str  # final file in the staging folder

    @property
    def transitions(self) -> int:
        per = self.max_episode_steps * self.count
        return per if self.kind == "episodes" else 2 * per


@dataclass(frozen=True)
class WorkDone:
    item: WorkItem
    seconds: float


_CACHE: GoalEnvCache | None = None


def init_worker() -> None:
    """Pool initializer: the parent handles Ctrl-C; workers just stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore")


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def chunk_arrays(episodes: list[EpisodeResult]) -> dict[str, np.ndarray]:
    """Concatenate a chunk's episodes into flat arrays (the staged file layout)."""
    return {
        "observations": np.concatenate([e.observations for e in episodes]),
        "actions": np.concatenate([e.actions for e in episodes]),
        "rewards": np.concatenate([e.rewards for e in episodes]),
        "terminations": np.concatenate([e.terminations for e in episodes]),
        "truncations": np.concatenate([e.truncations for e in episodes]),
        "success": np.concatenate([e.success for e in episodes]),
        "lengths": np.array([len(e.rewards) for e in episodes], dtype=np.int64),
        "episode_index": np.array([e.episode_index for e in episodes], np.int64),
        "make_seed": np.array([e.make_seed for e in episodes], np.int64),
        "goal_index": np.array([e.goal_index for e in episodes], np.int64),
        "degraded": np.array([e.degraded for e in episodes], dtype=bool),
        "noise_std": np.array([e.noise_std for e in episodes], np.float64),
        "returns": np.array([e.episode_return for e in episodes], np.float64),
        "solved": np.array([e.solved for e in episodes], dtype=bool),
        "last_success": np.array([e.success[-1] > 0 for e in episodes], dtype=bool),
    }


def run_work_item(item: WorkItem) -> WorkDone:
    """Run one work item and write its staged file (atomically). Worker entry point."""
    global _CACHE
    if _CACHE is None:
        _CACHE = GoalEnvCache()
    start = time.perf_counter()
    if item.kind == "episodes":
        quality = get_quality(item.quality)
        episodes = [
            rollout_episode(
                item.task, item.seed, i, quality, item.max_episode_steps, cache=_CACHE
            )
            for i in range(item.first, item.first + item.count)
        ]
        arrays = chunk_arrays(episodes)
    elif item.kind == "refs":
        arrays = reference_rollouts(
            item.task, item.seed, item.max_episode_steps, item.count, cache=_CACHE
        )
    else:  # pragma: no cover - programming error
        raise ValueError(item.kind)
    _atomic_savez(Path(item.path), arrays)
    return WorkDone(item=item, seconds=time.perf_counter() - start)
