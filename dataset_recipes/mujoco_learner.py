"""The learner of the MuJoCo recipes: d3rlpy's SAC on one task of Prompt-DT's
benchmarks, every episode recorded in order, then its final policy's rollouts.

The loop, checkpoints and resume are the Meta-World replay learner's
(:mod:`dataset_recipes.replay`); what differs is the env: Gymnasium's MuJoCo
model with the task's reward (:mod:`dataset_recipes.mujoco_envs`), seeded on
reset, with episodes that may terminate (Ant-dir) and no success signal.

Seeds: training episode ``i`` of a task resets with a seed drawn from
``(seed, task, i)``, and the expert rollouts continue that stream (episodes
``N``, ``N + 1``, ... of an ``N``-episode learner); the held-out episodes
(greedy evaluations, reference scores, the evaluator) reset with
:func:`eval_reset_seed`.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .envs import stable_key
from .mujoco_tasks import EPISODE_STEPS, env_id, eval_reset_seed
from .replay import (
    EVAL_EPISODES,
    LearnerFiles,
    ReplayDone,
    SACSettings,
    commit_chunk,
    drop_later_chunks,
    fresh_learner,
    one_torch_thread,
    restore_learner,
    tenths,
)
from .rollout import EpisodeRecorder, EpisodeResult, _atomic_savez, chunk_arrays

__all__ = [
    "EPISODE_STEPS",
    "MujocoJob",
    "env_sizes",
    "REF_RANDOM_EPISODES",
    "eval_reset_seed",
    "make_task_env",
    "run_mujoco_job",
    "task_name",
]

#: Uniform-random episodes per task for the reference minimum score.
REF_RANDOM_EPISODES = 5
_TRAIN_STREAM = stable_key("mujoco-train")
_WARMUP_STREAM = stable_key("mujoco-warmup")


def task_name(benchmark: str, task: int) -> str:
    """A task's name in the datasets (``cheetah-vel-2``)."""
    return f"{benchmark}-{task}"


def _train_reset_seed(seed: int, name: str, episode: int) -> int:
    ss = np.random.SeedSequence([seed, stable_key(name), _TRAIN_STREAM, episode])
    return int(ss.generate_state(1)[0])


def make_task_env(benchmark: str, task: int) -> Any:
    import gymnasium as gym

    return gym.make(env_id(benchmark), task=task)


def env_sizes(benchmark: str) -> tuple[int, int]:
    """(observation size, action size) of a benchmark's env."""
    env = make_task_env(benchmark, 0)
    sizes = (int(env.observation_space.shape[0]), int(env.action_space.shape[0]))
    env.close()
    return sizes


# ---------------------------------------------------------------- one task


@dataclass(frozen=True)
class MujocoJob(LearnerFiles):
    """One task's learner run and its expert rollouts."""

    benchmark: str
    task_index: int
    seed: int
    episodes: int
    chunk_episodes: int
    expert_episodes: int
    sac: SACSettings
    folder: str
    observation_size: int
    action_size: int

    @property
    def task(self) -> str:  # type: ignore[override]
        return task_name(self.benchmark, self.task_index)

    def recorder(self, env: Any, reset_seed: int) -> EpisodeRecorder:
        """A new episode of this task's env, reset with ``reset_seed``."""
        return EpisodeRecorder(
            env,
            EPISODE_STEPS,
            np.float32,
            self.observation_size,
            self.action_size,
            reset_seed=reset_seed,
        )

    @property
    def expert_path(self) -> Path:
        return Path(self.folder) / "experts" / f"{self.task}.npz"


def _greedy_returns(sac: Any, env: Any, seed: int, episodes: int) -> np.ndarray:
    """Returns of the deterministic policy on the held-out reset seeds."""
    out = np.empty(episodes)
    for j in range(episodes):
        o, _ = env.reset(seed=eval_reset_seed(seed, j))
        total, done = 0.0, False
        while not done:
            a = sac.predict(np.asarray(o, dtype=np.float32)[None])[0]
            o, r, terminated, truncated, _ = env.step(np.clip(a, -1.0, 1.0))
            total += float(r)
            done = bool(terminated or truncated)
        out[j] = total
    return out


def _random_returns(job: MujocoJob, env: Any) -> np.ndarray:
    """Returns of uniform random actions on the held-out reset seeds."""
    rng = np.random.default_rng([job.seed, stable_key(job.task), 7])
    out = np.empty(REF_RANDOM_EPISODES)
    for j in range(REF_RANDOM_EPISODES):
        env.reset(seed=eval_reset_seed(job.seed, j))
        total, done = 0.0, False
        while not done:
            a = rng.uniform(-1.0, 1.0, job.action_size).astype(np.float32)
            _, r, terminated, truncated, _ = env.step(a)
            total += float(r)
            done = bool(terminated or truncated)
        out[j] = total
    return out


def _episode(job: MujocoJob, learner: Any, index: int, env: Any) -> EpisodeResult:
    """Collect training episode ``index`` and learn from every step of it."""
    settings = job.sac
    reset_seed = _train_reset_seed(job.seed, job.task, index)
    warmup = np.random.default_rng(
        [job.seed, stable_key(job.task), _WARMUP_STREAM, index]
    )
    random_actions = warmup.uniform(-1.0, 1.0, (EPISODE_STEPS, job.action_size))
    rec = job.recorder(env, reset_seed)
    for t in range(EPISODE_STEPS):
        step = learner.buffer.transition_count  # env steps taken before this one
        if step < settings.random_steps:
            action = random_actions[t].astype(np.float32)
        else:
            action = np.clip(learner.sac.sample_action(rec.obs[t : t + 1])[0], -1, 1)
        _, r = rec.step(t, action)
        learner.buffer.append(rec.obs[t], rec.actions[t], r)
        end = rec.terminated or t == EPISODE_STEPS - 1
        if end:
            learner.buffer.clip_episode(rec.terminated)  # time-out: bootstrap
        ready = learner.buffer.transition_count > settings.batch_size
        if step + 1 > settings.random_steps and ready:
            for _ in range(settings.updates_per_step):
                batch = learner.buffer.sample_transition_batch(settings.batch_size)
                learner.sac.update(batch)
        if end:
            break
    return rec.episode(episode_index=index, make_seed=reset_seed)


def _run_chunk(job: MujocoJob, learner: Any, first: int, env: Any) -> None:
    """Episodes ``first ..`` of one chunk, then the chunk file, then the
    checkpoint (a checkpoint never points past its data)."""
    start = time.process_time()
    count = min(job.chunk_episodes, job.episodes - first)
    evals = set(tenths(job.episodes))
    episodes, eval_after, eval_return = [], [], []
    for index in range(first, first + count):
        episodes.append(_episode(job, learner, index, env))
        if index + 1 in evals:
            eval_after.append(index + 1)
            returns = _greedy_returns(learner.sac, env, job.seed, EVAL_EPISODES)
            eval_return.append(float(returns.mean()))
    learner.cpu_seconds += time.process_time() - start
    arrays = chunk_arrays(episodes)
    arrays["eval_after_episodes"] = np.array(eval_after, np.int64)
    arrays["eval_return"] = np.array(eval_return, np.float64)
    commit_chunk(job, learner, first, first + count, arrays)


def _expert_rollouts(job: MujocoJob, learner: Any, env: Any) -> None:
    """The final policy's episodes (deterministic actions), its held-out
    return and the random policy's: the expert data and reference scores."""
    episodes = []
    for j in range(job.expert_episodes):
        seed = _train_reset_seed(job.seed, job.task, job.episodes + j)
        rec = job.recorder(env, seed)
        for t in range(EPISODE_STEPS):
            a = learner.sac.predict(rec.obs[t : t + 1])[0]
            rec.step(t, np.clip(a, -1.0, 1.0))
            if rec.terminated:
                break
        episodes.append(rec.episode(episode_index=j, make_seed=seed))
    arrays = chunk_arrays(episodes)
    arrays["expert_returns"] = _greedy_returns(
        learner.sac, env, job.seed, EVAL_EPISODES
    )
    arrays["random_returns"] = _random_returns(job, env)
    arrays["cpu_seconds"] = np.asarray(learner.cpu_seconds, np.float64)
    job.expert_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(job.expert_path, arrays)


def run_mujoco_job(job: MujocoJob) -> ReplayDone:
    """Run (or resume) one task's learner to the end of its budget, then its
    expert rollouts. Worker entry point; every file is written atomically."""
    warnings.simplefilter("ignore")
    sys.modules.setdefault("gym_notices", None)  # type: ignore[arg-type]
    with one_torch_thread():
        learner = restore_learner(job) or fresh_learner(job)
        drop_later_chunks(job, learner.episodes_done)
        env = make_task_env(job.benchmark, job.task_index)
        try:
            for first in job.chunk_starts():
                if first >= learner.episodes_done:
                    _run_chunk(job, learner, first, env)
            if not job.expert_path.exists():
                _expert_rollouts(job, learner, env)
        finally:
            env.close()
    return ReplayDone(job.task, learner.cpu_seconds)
