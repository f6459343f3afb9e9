"""The ``replay`` quality: a real learner's replay buffer, recorded in order.

Why: every published multi-task offline number on Meta-World (HarmoDT, MTDiff,
and the MTDT / Prompt-DT rows of their tables) uses the replay buffer of a SAC
learner trained online per task: *near-optimal* is the whole buffer (random to
expert), *sub-optimal* its first half. This module runs that learner:
**d3rlpy's SAC** (no SAC of our own), one task per call, on the task's
training goals (episode ``i`` uses the goal of :func:`envs.train_goal`, as the
scripted qualities do), and records every episode it collects, in order.

The loop is ours (d3rlpy's ``fit_online`` cannot record infos, goals or resume
mid-run); it follows ``fit_online``'s order exactly: act, step, append to the
replay buffer, clip the episode at its end (a time-out, not a termination),
then take ``updates_per_step`` gradient steps once the random warm-up is over.

Determinism: one torch thread; the learner's randomness comes from the global
torch RNG (policy samples) and the global numpy RNG (d3rlpy's batch sampler),
both seeded per ``(seed, task)`` and saved in every checkpoint; warm-up actions
come from a per-episode generator. Meta-World's goal sampling reseeds the
global numpy RNG, so fetching an environment restores the sampler's state.

Resume: after every chunk of episodes the worker writes the chunk file, then a
checkpoint (SAC's networks and optimisers through d3rlpy's ``save_model``, the
RNG states, the gradient-step count, the CPU time so far). A resumed worker
rebuilds the replay buffer from the chunk files (the buffer *is* the data),
loads the checkpoint and continues; the arrays equal an uninterrupted run's.
"""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .envs import GoalEnvCache, eval_make_seed, stable_key, train_goal
from .errors import BuildInterrupted, RecipeError
from .rollout import (
    REF_EPISODES,
    EpisodeRecorder,
    EpisodeResult,
    WorkItem,
    _atomic_savez,
    chunk_arrays,
    episode_rng,
    run_work_item,
)

#: Seed-sequence stream of the learner (warm-up actions and the RNG seeds).
REPLAY_STREAM = stable_key("replay")
#: Held-out goals on which the learner's greedy policy is measured at each tenth.
EVAL_EPISODES = 10
#: The learner's progress is reported at these fractions of the budget.
TENTHS = 10


@dataclass(frozen=True)
class SACSettings:
    """SAC's settings for the replay recipe (d3rlpy ``SACConfig`` + the loop).

    The defaults are d3rlpy's ``SACConfig`` defaults, which are the SAC paper's
    (Haarnoja et al. 2018: two hidden layers of 256, batch 256, Adam 3e-4 for
    actor, critics and temperature, tau 0.005, two critics, automatic entropy
    tuning), one gradient step per environment step, and a warm-up of 5,000
    uniform random steps (10 episodes) before the first update.
    """

    hidden_units: tuple[int, ...] = (256, 256)
    batch_size: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    n_critics: int = 2
    initial_temperature: float = 1.0
    random_steps: int = 5000
    updates_per_step: int = 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_units"] = list(self.hidden_units)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> SACSettings:
        """Settings from a mapping or a JSON object; :class:`RecipeError` on
        unknown keys or bad values."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise RecipeError(f"SAC settings are not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise RecipeError("SAC settings must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecipeError(
                f"unknown SAC setting(s) {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(names))}"
            )
        values = dict(data)
        if "hidden_units" in values:
            values["hidden_units"] = tuple(int(h) for h in values["hidden_units"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "n_critics": self.n_critics,
            "updates_per_step": self.updates_per_step,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise RecipeError(f"SAC {name} must be a positive integer, got {value}")
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise RecipeError("SAC hidden_units must be positive integers")
        if not isinstance(self.random_steps, int) or self.random_steps < 0:
            raise RecipeError(f"SAC random_steps must be >= 0, got {self.random_steps}")

    def create(self, observation_size: int = 39, action_size: int = 4) -> Any:
        """d3rlpy's SAC with these settings, built for the env's shapes
        (Meta-World's by default)."""
        import d3rlpy

        encoder = d3rlpy.models.VectorEncoderFactory(
            hidden_units=list(self.hidden_units)
        )
        sac = d3rlpy.algos.SACConfig(
            batch_size=self.batch_size,
            gamma=self.gamma,
            actor_learning_rate=self.learning_rate,
            critic_learning_rate=self.learning_rate,
            temp_learning_rate=self.learning_rate,
            actor_encoder_factory=encoder,
            critic_encoder_factory=encoder,
            tau=self.tau,
            n_critics=self.n_critics,
            initial_temperature=self.initial_temperature,
        ).create(device="cpu:0")
        sac.create_impl((observation_size,), action_size)
        return sac

    def describe(self) -> str:
        """One markdown sentence: the settings in words and numbers."""
        hidden = "x".join(str(h) for h in self.hidden_units)
        return (
            f"d3rlpy {_d3rlpy_version()} `SAC`: MLP {hidden} for the actor and "
            f"each of {self.n_critics} critics, batch {self.batch_size}, Adam "
            f"{self.learning_rate:g} (actor, critics, temperature), gamma "
            f"{self.gamma:g}, tau {self.tau:g}, automatic entropy tuning from "
            f"temperature {self.initial_temperature:g}; {self.random_steps:,} "
            "uniform random warm-up steps, then actions sampled from the policy "
            f"and {self.updates_per_step} gradient step(s) per environment step."
        )


def _d3rlpy_version() -> str:
    from importlib.metadata import version

    return version("d3rlpy")


def tenths(episodes: int) -> list[int]:
    """Episode counts after which a learner's greedy policy is evaluated."""
    return sorted({max(1, round(episodes * k / TENTHS)) for k in range(1, 11)})


class LearnerFiles:
    """Where a learner job's files are: its chunks and its checkpoint under
    the build's staging folder (a mixin of the jobs' dataclasses)."""

    folder: str
    task: str
    episodes: int
    chunk_episodes: int

    def chunk_path(self, first: int) -> Path:
        return Path(self.folder) / "chunks" / f"{self.task}-{first:08d}.npz"

    def chunk_starts(self) -> list[int]:
        return list(range(0, self.episodes, self.chunk_episodes))

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.folder) / "learners" / f"{self.task}.npz"


def learners_interrupted(jobs: Sequence[LearnerJob], why: str) -> BuildInterrupted:
    """The error of a learner build stopped by ``why`` (Ctrl-C, SIGTERM)."""
    staged = sum(j.chunk_path(f).exists() for j in jobs for f in j.chunk_starts())
    total = sum(len(j.chunk_starts()) for j in jobs)
    return BuildInterrupted(
        f"build interrupted ({why}): {staged}/{total} chunks staged, each task's "
        "learner checkpointed at its last chunk; re-run the same command to resume",
        staged_chunks=staged,
        total_chunks=total,
    )


@dataclass(frozen=True)
class ReplayJob(LearnerFiles):
    """One task's learner run: everything it depends on, and where it writes."""

    task: str
    seed: int
    episodes: int
    max_episode_steps: int
    chunk_episodes: int
    sac: SACSettings
    folder: str  # the build's staging folder (chunks/, learners/)
    refs_path: str  # the task's shared reference-rollout file

    def eval_points(self) -> list[int]:
        """Episode counts after which the greedy policy is evaluated (tenths)."""
        return tenths(self.episodes)

    @property
    def observation_size(self) -> int:
        return 39

    @property
    def action_size(self) -> int:
        return 4


class LearnerJob(Protocol):
    """What the learner's checkpoints need of a job (Meta-World's
    :class:`ReplayJob`, or a MuJoCo task's): its name and seed, its budget in
    episodes cut into chunks, its SAC, the env's sizes and its files."""

    @property
    def task(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def episodes(self) -> int: ...

    @property
    def chunk_episodes(self) -> int: ...

    @property
    def sac(self) -> SACSettings: ...

    @property
    def observation_size(self) -> int: ...

    @property
    def action_size(self) -> int: ...

    @property
    def checkpoint_path(self) -> Path: ...

    def chunk_path(self, first: int) -> Path: ...

    def chunk_starts(self) -> list[int]: ...


@dataclass(frozen=True)
class ReplayDone:
    task: str
    cpu_seconds: float


@contextmanager
def _numpy_state_kept() -> Iterator[None]:
    """Meta-World's goal sampling reseeds numpy's global RNG, which d3rlpy's
    batch sampler uses: keep the sampler's stream independent of env caching."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def _get_env(cache: GoalEnvCache, task: str, make_seed: int, goal: int) -> Any:
    with _numpy_state_kept():
        return cache.get(task, make_seed, goal)


def _seeds(seed: int, task: str) -> tuple[int, int]:
    """(torch seed, numpy seed) of a task's learner."""
    ss = np.random.SeedSequence([seed, stable_key(task), REPLAY_STREAM])
    a, b = ss.generate_state(2)
    return int(a), int(b)


def new_buffer(observation_size: int = 39, action_size: int = 4) -> Any:
    """An empty d3rlpy replay buffer for the learner (float32 signatures)."""
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer, Signature

    def sig(shape: tuple[int, ...]) -> Any:
        return Signature(dtype=[np.dtype(np.float32)], shape=[shape])

    return ReplayBuffer(
        InfiniteBuffer(),
        observation_signature=sig((observation_size,)),
        action_signature=sig((action_size,)),
        reward_signature=sig((1,)),
        action_space=ActionSpace.CONTINUOUS,
        action_size=action_size,
    )


@dataclass
class Learner:
    """The live state of one task's learner."""

    sac: Any
    buffer: Any
    episodes_done: int
    cpu_seconds: float


def fresh_learner(job: LearnerJob) -> Learner:
    import torch

    torch_seed, numpy_seed = _seeds(job.seed, job.task)
    torch.manual_seed(torch_seed)
    np.random.seed(numpy_seed % 2**32)
    return Learner(
        job.sac.create(job.observation_size, job.action_size),
        new_buffer(job.observation_size, job.action_size),
        0,
        0.0,
    )


def save_learner(job: LearnerJob, learner: Learner) -> None:
    import torch

    model = io.BytesIO()
    learner.sac.impl.save_model(model)
    state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    _, keys, pos, has_gauss, cached = state
    job.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(
        job.checkpoint_path,
        {
            "model": np.frombuffer(model.getvalue(), dtype=np.uint8),
            "episodes_done": np.asarray(learner.episodes_done, np.int64),
            "grad_step": np.asarray(learner.sac.grad_step, np.int64),
            "numpy_keys": np.asarray(keys, dtype=np.uint32),
            "numpy_pos": np.asarray(pos, np.int64),
            "numpy_has_gauss": np.asarray(has_gauss, np.int64),
            "numpy_cached": np.asarray(cached, np.float64),
            "torch_rng": torch.get_rng_state().numpy(),
            "cpu_seconds": np.asarray(learner.cpu_seconds, np.float64),
        },
    )


def restore_learner(job: LearnerJob) -> Learner | None:
    """The learner at its last checkpoint, its buffer rebuilt from the chunk
    files before it; None when there is no usable checkpoint."""
    import torch

    path = job.checkpoint_path
    if not path.exists():
        return None
    with np.load(path) as z:
        done = int(z["episodes_done"])
        if done % job.chunk_episodes and done != job.episodes:
            return None  # not at a chunk boundary: not ours
        sac = job.sac.create(job.observation_size, job.action_size)
        sac.impl.load_model(io.BytesIO(z["model"].tobytes()))
        sac.set_grad_step(int(z["grad_step"]))
        numpy_state = (
            "MT19937",
            z["numpy_keys"],
            int(z["numpy_pos"]),
            int(z["numpy_has_gauss"]),
            float(z["numpy_cached"]),
        )
        torch_state = torch.from_numpy(z["torch_rng"].copy())
        cpu = float(z["cpu_seconds"])
    buffer = new_buffer(job.observation_size, job.action_size)
    for first in job.chunk_starts():
        if first >= done:
            break
        if not append_chunk(buffer, job.chunk_path(first)):
            return None  # a chunk the checkpoint needs is missing
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    return Learner(sac, buffer, done, cpu)


def append_chunk(buffer: Any, path: Path) -> bool:
    """Append a staged chunk's episodes to ``buffer`` exactly as the live loop
    did (float32 observations, the executed actions, float rewards, each
    episode clipped as a termination or a time-out)."""
    if not path.exists():
        return False
    with np.load(path) as z:
        obs, actions, rewards = z["observations"], z["actions"], z["rewards"]
        terminations = z["terminations"]
        o = s = 0
        for length in z["lengths"]:
            for t in range(int(length)):
                buffer.append(obs[o + t], actions[s + t], float(rewards[s + t]))
            buffer.clip_episode(bool(terminations[s + int(length) - 1]))
            o += int(length) + 1
            s += int(length)
    return True


def drop_later_chunks(job: LearnerJob, done: int) -> None:
    """Chunks past the checkpoint (a kill between chunk and checkpoint) are
    regenerated; remove them so nothing stale is ever assembled."""
    for first in job.chunk_starts():
        if first >= done:
            job.chunk_path(first).unlink(missing_ok=True)


def _greedy_success(sac: Any, job: ReplayJob, cache: GoalEnvCache) -> float:
    """Success (at any step) of the deterministic policy on the first
    ``EVAL_EPISODES`` held-out goals. Uses no RNG."""
    solved = 0
    for k in range(EVAL_EPISODES):
        env = _get_env(cache, job.task, eval_make_seed(job.seed), k)
        o, _ = env.reset()
        hit = False
        for _ in range(job.max_episode_steps):
            a = sac.predict(np.asarray(o, dtype=np.float32)[None])[0]
            o, _, _, _, info = env.step(np.clip(a, -1.0, 1.0))
            hit = hit or bool(info.get("success", 0.0))
        solved += hit
    return solved / EVAL_EPISODES


def _episode(
    job: ReplayJob, learner: Learner, index: int, cache: GoalEnvCache
) -> EpisodeResult:
    """Collect training episode ``index`` and learn from every step of it."""
    settings, steps = job.sac, job.max_episode_steps
    make_seed, goal = train_goal(job.seed, index)
    env = _get_env(cache, job.task, make_seed, goal)
    warmup = episode_rng(job.seed, job.task, REPLAY_STREAM, index)
    random_actions = warmup.uniform(-1.0, 1.0, (steps, 4)).astype(np.float32)
    rec = EpisodeRecorder(env, steps, np.float32)
    obs, actions = rec.obs, rec.actions
    for t in range(steps):
        step = index * steps + t  # env steps the learner took before this one
        if step < settings.random_steps:
            action = random_actions[t]
        else:
            action = np.clip(learner.sac.sample_action(obs[t : t + 1])[0], -1, 1)
        _, r = rec.step(t, action)
        learner.buffer.append(obs[t], actions[t], r)
        if t == steps - 1:
            learner.buffer.clip_episode(False)  # a time-out: bootstrap
        ready = learner.buffer.transition_count > settings.batch_size
        if step + 1 > settings.random_steps and ready:
            for _ in range(settings.updates_per_step):
                batch = learner.buffer.sample_transition_batch(settings.batch_size)
                learner.sac.update(batch)
    return EpisodeResult.timed_out(
        obs,
        actions,
        rec.rewards,
        rec.success,
        episode_index=index,
        make_seed=make_seed,
        goal_index=goal,
    )


def _refs(job: ReplayJob) -> None:
    """The task's reference rollouts (random policy, scripted expert), shared
    with the scripted qualities' builds."""
    if not Path(job.refs_path).exists():
        Path(job.refs_path).parent.mkdir(parents=True, exist_ok=True)
        item = WorkItem(
            "refs",
            job.task,
            0,
            REF_EPISODES,
            job.seed,
            "replay",
            job.max_episode_steps,
            job.refs_path,
        )
        with _numpy_state_kept():
            run_work_item(item)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_replay_job(job: ReplayJob) -> ReplayDone:
    """Run (or resume) one task's learner to the end of its budget. Worker
    entry point; every file it writes is written atomically."""
    warnings.simplefilter("ignore")
    sys.modules.setdefault("gym_notices", None)  # type: ignore[arg-type]
    with one_torch_thread():
        _refs(job)
        learner = restore_learner(job) or fresh_learner(job)
        drop_later_chunks(job, learner.episodes_done)
        for stale in (Path(job.folder) / "chunks").glob(f"{job.task}-*.tmp"):
            stale.unlink(missing_ok=True)
        cache = GoalEnvCache(capacity=2)
        evals = set(job.eval_points())
        try:
            for first in job.chunk_starts():
                if first < learner.episodes_done:
                    continue
                _run_chunk(job, learner, first, evals, cache)
        finally:
            cache.close()
    return ReplayDone(job.task, learner.cpu_seconds)


def _run_chunk(
    job: ReplayJob,
    learner: Learner,
    first: int,
    evals: set[int],
    cache: GoalEnvCache,
) -> None:
    """Episodes ``first ..`` of one chunk, then the chunk file, then the
    checkpoint (in that order: a checkpoint never points past its data)."""
    start = time.process_time()
    count = min(job.chunk_episodes, job.episodes - first)
    episodes, eval_after, eval_success = [], [], []
    for index in range(first, first + count):
        episodes.append(_episode(job, learner, index, cache))
        if index + 1 in evals:
            eval_after.append(index + 1)
            eval_success.append(_greedy_success(learner.sac, job, cache))
    learner.cpu_seconds += time.process_time() - start
    arrays = chunk_arrays(episodes)
    arrays["learner_step"] = np.array(
        [e.episode_index * job.max_episode_steps for e in episodes], np.int64
    )
    arrays["eval_after_episodes"] = np.array(eval_after, np.int64)
    arrays["eval_success"] = np.array(eval_success, np.float64)
    commit_chunk(job, learner, first, first + count, arrays)


def commit_chunk(
    job: LearnerJob,
    learner: Learner,
    first: int,
    done: int,
    arrays: dict[str, np.ndarray],
) -> None:
    """A finished chunk's file (with the learner's CPU time so far), then the
    checkpoint at ``done`` episodes: in that order, so a checkpoint never
    points past its data."""
    arrays["cpu_seconds"] = np.asarray(learner.cpu_seconds, np.float64)
    job.chunk_path(first).parent.mkdir(parents=True, exist_ok=True)
    _atomic_savez(job.chunk_path(first), arrays)
    learner.episodes_done = done
    save_learner(job, learner)
