"""Build the two replay datasets of a suite: validate, stage, run the
learners (one per task, in parallel), assemble, publish.

Why a builder of its own: a scripted build is cut into independent chunks;
a learner is one sequential run per task that checkpoints as it goes
(:mod:`dataset_recipes.replay`). Everything else is the scripted builder's
(writable root, one lock per build, hidden staging folder, Minari writer,
one ``os.rename`` per published dataset), imported from there.

One run writes ``<group>/near-optimal-replay-v0`` (every episode of every
task's learner, in order) and ``<group>/sub-optimal-replay-v0`` (the first
half of each task's episodes).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__, schema
from .builder import DEFAULT_AUTHOR, DEFAULT_CODE_PERMALINK, RECIPE_VERSION
from .card import LearnerCurve, TaskStats, render_replay_card
from .commandline import Terminated
from .envs import MAX_EPISODE_STEPS, env_metadata
from .errors import RecipeError
from .ids import dataset_id
from .minari_store import (
    MinariWrite,
    Staging,
    build_lock,
    params_digest,
    recipe_metadata,
)
from .qualities import REPLAY_DATASETS, REPLAY_QUALITY
from .replay import (
    EVAL_EPISODES,
    TENTHS,
    ReplayDone,
    ReplayJob,
    SACSettings,
    learners_interrupted,
    run_replay_job,
)
from .rollout import read_refs, refs_file
from .running import SuitePlan, mp_context, positive_int, progress_bar
from .suites import resolve_tasks, task_args

__all__ = [
    "DEFAULT_ENV_STEPS_PER_TASK",
    "ReplayBuildResult",
    "build_replay_datasets",
    "replay_dataset_ids",
]

#: Bump when a change to the learner or its loop changes the recorded arrays.
REPLAY_RECIPE_VERSION = 1
#: Default learner budget per task (env steps); sized in docs/recipes.md so
#: that MT5 builds within about 6 CPU-hours on this project's 2-core machines.
DEFAULT_ENV_STEPS_PER_TASK = 200_000
#: Episodes per staged chunk = episodes between two learner checkpoints.
DEFAULT_REPLAY_CHUNK = 10
ALGORITHM_NAME = "d3rlpy SAC trained online; every episode of its replay buffer"


@dataclass(frozen=True)
class _ReplayPlan(SuitePlan):
    env_steps_per_task: int
    sac: SACSettings

    @property
    def episodes(self) -> int:
        return self.env_steps_per_task // self.max_episode_steps

    def params(self) -> dict[str, Any]:
        return {
            "recipe_version": REPLAY_RECIPE_VERSION,
            "quality": REPLAY_QUALITY,
            "tasks": list(self.tasks),
            "seed": self.seed,
            "env_steps_per_task": self.env_steps_per_task,
            "episodes_per_task": self.episodes,
            "max_episode_steps": self.max_episode_steps,
            "chunk_episodes": self.chunk_episodes,
            "sac": self.sac.to_json(),
        }

    def jobs(self, folder: Path, refs_folder: Path) -> list[ReplayJob]:
        return [
            ReplayJob(
                task=task,
                seed=self.seed,
                episodes=self.episodes,
                max_episode_steps=self.max_episode_steps,
                chunk_episodes=self.chunk_episodes,
                sac=self.sac,
                folder=str(folder),
                refs_path=str(
                    refs_file(refs_folder, task, self.seed, self.max_episode_steps)
                ),
            )
            for task in self.tasks
        ]


def _env_steps(value: Any, episode_steps: int) -> int:
    """The learner budget: a positive whole number of episodes' steps."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise RecipeError(
            f"env steps per task must be a positive integer, got {value!r}"
        )
    if value < episode_steps or value % episode_steps:
        raise RecipeError(
            f"env steps per task must be a positive multiple of the episode "
            f"length {episode_steps} (whole episodes), got {value}"
        )
    return int(value)


def _make_plan(
    suite: str | None,
    tasks: str | Sequence[str] | None,
    env_steps_per_task: int,
    seed: int,
    max_episode_steps: int,
    chunk_episodes: int,
    sac: SACSettings | None,
) -> _ReplayPlan:
    common = SuitePlan.checked(
        suite, tasks, seed, max_episode_steps, chunk_episodes, 1000
    )
    budget = _env_steps(env_steps_per_task, common["max_episode_steps"])
    settings = sac or SACSettings()
    settings.check()
    return _ReplayPlan(**common, env_steps_per_task=budget, sac=settings)


def replay_dataset_ids(
    suite: str | None = None, tasks: str | Sequence[str] | None = None
) -> tuple[str, str]:
    """The ids a replay build of ``suite`` / ``tasks`` writes: (near, sub)."""
    resolved = resolve_tasks(suite, tasks)
    return tuple(dataset_id(resolved, name) for name in REPLAY_DATASETS)  # type: ignore[return-value]


# ----------------------------------------------------------------- running


class _Progress:
    """One rich bar per task: episodes recorded, the data's success in the
    latest chunk and the greedy policy's latest success (read from the staged
    chunks, so it works the same with any number of workers)."""

    def __init__(
        self, jobs: Sequence[ReplayJob], enabled: bool, stream: TextIO | None
    ) -> None:
        self.jobs = jobs
        self.enabled = enabled
        self._seen: dict[str, int] = {}
        if not enabled:
            return
        self.progress = progress_bar("{task.description}", "learner", stream)
        self.bars = {
            job.task: self.progress.add_task(job.task, total=job.episodes, learner="")
            for job in jobs
        }

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.progress.start()
            self.poll()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.poll()
            self.progress.stop()

    def poll(self) -> None:
        if not self.enabled:
            return
        for job in self.jobs:
            staged = [f for f in job.chunk_starts() if job.chunk_path(f).exists()]
            if not staged or self._seen.get(job.task) == staged[-1]:
                continue
            self._seen[job.task] = staged[-1]
            try:
                with np.load(job.chunk_path(staged[-1])) as z:
                    data = float(z["solved"].mean())
                    done = int(z["episode_index"][-1]) + 1
                    greedy = z["eval_success"]
            except (OSError, ValueError, KeyError):  # replaced while reading
                continue
            text = f"success {data:.0%} (data)"
            if len(greedy):
                text += f", {float(greedy[-1]):.0%} (greedy)"
            self.progress.update(self.bars[job.task], completed=done, learner=text)


def _run_jobs(
    jobs: Sequence[ReplayJob], workers: int, bar: _Progress
) -> list[ReplayDone]:
    """Every task's learner to the end, ``workers`` at a time."""
    if workers == 1 or len(jobs) == 1:
        done = []
        for job in jobs:
            done.append(run_replay_job(job))
            bar.poll()
        return done
    from .rollout import init_worker

    ctx = mp_context()
    with ctx.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
        pending = [pool.apply_async(run_replay_job, (job,)) for job in jobs]
        while not all(r.ready() for r in pending):
            pending[[r.ready() for r in pending].index(False)].wait(1.0)
            bar.poll()
        return [r.get() for r in pending]


# --------------------------------------------------------------- assembling


def _read_task(job: ReplayJob) -> dict[str, np.ndarray]:
    """Per-episode facts and greedy evaluations of one task, in order."""
    keys = ("solved", "last_success", "returns")
    acc: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    acc["eval_after"], acc["eval_success"] = [], []
    cpu = 0.0
    for first in job.chunk_starts():
        with np.load(job.chunk_path(first)) as z:
            for k in keys:
                acc[k].append(z[k])
            acc["eval_after"].append(z["eval_after_episodes"])
            acc["eval_success"].append(z["eval_success"])
            cpu = float(z["cpu_seconds"])
    out = {k: np.concatenate(v) for k, v in acc.items()}
    out["cpu_seconds"] = np.asarray(cpu, np.float64)
    return out


def _task_stats(
    task_id: int, task: str, facts: dict[str, np.ndarray], count: int, refs: Any
) -> TaskStats:
    returns = facts["returns"][:count]
    return TaskStats(
        task=task,
        task_id=task_id,
        episodes=count,
        success_rate=float(facts["solved"][:count].mean()),
        last_step_success_rate=float(facts["last_success"][:count].mean()),
        mean_return=float(returns.mean()),
        std_return=float(returns.std()),
        degraded_episodes=0,
        ref_min_score=refs.get("ref_min_score", float("nan")),
        ref_max_score=refs.get("ref_max_score", float("nan")),
    )


def _curve(task: str, facts: dict[str, np.ndarray], plan: _ReplayPlan) -> LearnerCurve:
    solved = facts["solved"]
    bounds = [round(plan.episodes * k / TENTHS) for k in range(TENTHS + 1)]
    tenths = [
        float(solved[a:b].mean()) if b > a else float("nan")
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    return LearnerCurve(
        task=task,
        env_steps=plan.env_steps_per_task,
        episodes=plan.episodes,
        data_success_by_tenth=tuple(tenths),
        greedy_after_episodes=tuple(int(e) for e in facts["eval_after"]),
        greedy_success=tuple(float(s) for s in facts["eval_success"]),
        cpu_seconds=float(facts["cpu_seconds"]),
    )


def _command(plan: _ReplayPlan) -> str:
    parts = ["harmodt-recipes", "metaworld", *task_args(plan.suite, plan.tasks)]
    parts += ["--quality", REPLAY_QUALITY]
    parts += ["--env-steps-per-task", str(plan.env_steps_per_task)]
    parts += ["--seed", str(plan.seed)]
    if plan.max_episode_steps != MAX_EPISODE_STEPS:
        parts += ["--max-episode-steps", str(plan.max_episode_steps)]
    if plan.chunk_episodes != DEFAULT_REPLAY_CHUNK:
        parts += ["--chunk-episodes", str(plan.chunk_episodes)]
    if plan.sac != SACSettings():
        parts += ["--sac", json.dumps(plan.sac.to_json(), separators=(",", ":"))]
    return shlex.join(parts)


@dataclass(frozen=True)
class ReplayDataset:
    """One of the two datasets a replay build wrote."""

    dataset_id: str
    path: Path
    share: float  # of each task's episodes, from the first
    stats: tuple[TaskStats, ...]
    card: str


@dataclass(frozen=True)
class ReplayBuildResult:
    """What a replay build produced."""

    tasks: tuple[str, ...]
    datasets: tuple[ReplayDataset, ...]  # near-optimal-replay, sub-optimal-replay
    curves: tuple[LearnerCurve, ...]
    env_steps_per_task: int
    cpu_seconds: float
    seconds: float


def _assemble(
    plan: _ReplayPlan,
    jobs: Sequence[ReplayJob],
    staging: Staging,
    ids: Sequence[str],
    author: str,
    code_permalink: str,
    overwrite: bool,
) -> tuple[list[ReplayDataset], list[LearnerCurve]]:
    refs = {job.task: read_refs(job.refs_path) for job in jobs}
    facts = {job.task: _read_task(job) for job in jobs}
    curves = [_curve(t, facts[t], plan) for t in plan.tasks]
    command = _command(plan)
    built = []
    for target, (name, share) in zip(ids, REPLAY_DATASETS.items(), strict=True):
        count = int(plan.episodes * share) if share < 1 else plan.episodes
        count = max(count, 1)
        stats = [
            _task_stats(i, t, facts[t], count, refs[t])
            for i, t in enumerate(plan.tasks)
        ]
        env_meta = env_metadata(plan.tasks, plan.seed, count, plan.max_episode_steps)
        card = render_replay_card(
            dataset_id=target,
            kind=name,
            tasks=plan.tasks,
            suite=plan.suite,
            seed=plan.seed,
            episodes=count,
            episodes_run=plan.episodes,
            max_episode_steps=plan.max_episode_steps,
            sac_description=plan.sac.describe(),
            eval_episodes=EVAL_EPISODES,
            stats=stats,
            curves=curves,
            env_meta=env_meta,
            command=command,
            package_version=__version__,
            recipe_version=REPLAY_RECIPE_VERSION,
        )
        chunks = {
            job.task: [
                (str(job.chunk_path(f)), min(plan.chunk_episodes, count - f))
                for f in job.chunk_starts()
                if f < count
            ]
            for job in jobs
        }
        spec = MinariWrite(
            dataset=target,
            plan=plan,
            chunks=chunks,
            refs=refs,
            card=card,
            env_meta=env_meta,
            algorithm_name=ALGORITHM_NAME,
            author=author,
            code_permalink=code_permalink,
            metadata={
                **recipe_metadata(
                    stats,
                    plan.params(),
                    quality=name,  # as the id says; the recipe's is "replay"
                    episodes_in_dataset=count,
                    suite=plan.suite,
                    command=command,
                    success_band=None,
                ),
                schema.METADATA_LEARNER: {
                    "sac": plan.sac.to_json(),
                    "tasks": {c.task: c.to_json() for c in curves},
                },
            },
        )
        folder = staging.assemble(spec, name)
        built.append((target, folder, share, stats, card))
    published = []
    for target, folder, share, stats, card in built:
        path = staging.publish(folder, target, overwrite)
        published.append(ReplayDataset(target, path, share, tuple(stats), card))
    return published, curves


# ---------------------------------------------------------------------- API


def build_replay_datasets(
    suite: str | None = None,
    tasks: str | Sequence[str] | None = None,
    env_steps_per_task: int = DEFAULT_ENV_STEPS_PER_TASK,
    *,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    chunk_episodes: int = DEFAULT_REPLAY_CHUNK,
    sac: SACSettings | None = None,
    progress: bool = True,
    author: str = DEFAULT_AUTHOR,
    code_permalink: str = DEFAULT_CODE_PERMALINK,
    progress_stream: TextIO | None = None,
) -> ReplayBuildResult:
    """Train d3rlpy's SAC online on each task and publish its replay buffer as
    ``<group>/near-optimal-replay-v0`` (every episode) and
    ``<group>/sub-optimal-replay-v0`` (each task's first half).

    Args:
        suite, tasks: as :func:`build_metaworld_dataset`.
        env_steps_per_task: the learner's budget per task, a multiple of the
            episode length.
        seed: recipe seed: goals, the learner's RNG seeds, evaluation goals.
        workers: tasks learning at once, one process and one torch thread
            each (results do not depend on it).
        overwrite: replace existing datasets with the same ids.
        max_episode_steps, chunk_episodes: episode length; episodes between
            two learner checkpoints.
        sac: SAC's settings (default :class:`SACSettings`).

    Raises:
        RecipeError: bad input (before any environment is stepped).
        BuildInterrupted: Ctrl-C or SIGTERM; finished tasks and each
            learner's last checkpoint are kept, a re-run resumes.
    """
    start = time.perf_counter()
    plan = _make_plan(
        suite, tasks, env_steps_per_task, seed, max_episode_steps, chunk_episodes, sac
    )
    n_workers = positive_int("workers", workers, 1024)
    ids = replay_dataset_ids(None, plan.tasks)
    params = plan.params()
    slug = ids[0].rsplit("/", 1)[0].replace("/", "__") + "__replay"
    staging = Staging.open(ids, slug, params_digest(params), overwrite)
    with build_lock(staging.lock, f"the replay datasets {', '.join(ids)}"):
        # Other parameters' learners are kept: hours of CPU, resumable.
        staging.prepare(params, drop_others=False)
        jobs = plan.jobs(staging.folder, staging.parent / f"refs-v{RECIPE_VERSION}")
        try:
            with _Progress(jobs, progress, progress_stream) as bar:
                _run_jobs(jobs, n_workers, bar)
        except KeyboardInterrupt as exc:
            why = "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt"
            raise learners_interrupted(jobs, why) from exc
        datasets, curves = _assemble(
            plan, jobs, staging, ids, author, code_permalink, overwrite
        )
        staging.remove()
    return ReplayBuildResult(
        tasks=plan.tasks,
        datasets=tuple(datasets),
        curves=tuple(curves),
        env_steps_per_task=plan.env_steps_per_task,
        cpu_seconds=sum(c.cpu_seconds for c in curves),
        seconds=time.perf_counter() - start,
    )
