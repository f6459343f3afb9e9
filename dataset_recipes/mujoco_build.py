"""Cheetah-vel, Cheetah-dir and Ant-dir as recipes: d3rlpy's SAC trained per
task, its replay buffer and its final policy's rollouts as Minari datasets.

Why: Prompt-DT's and HarmoDT's unseen-task numbers are on data made by
per-task SAC experts that nobody can download or rebuild; the learner of the
Meta-World replay recipe (:mod:`dataset_recipes.replay`) makes it again, with
the same checkpoints, chunks and resume. One build of a benchmark trains a
learner for every task (training and test tasks) and writes four datasets:

* ``harmodt-mujoco/<benchmark>-<split>/expert-v0``: rollouts of each task's
  final SAC policy, acting deterministically (Prompt-DT's kind of data).
* ``harmodt-mujoco/<benchmark>-<split>/replay-v0``: every episode the learner
  collected, in order.

``<split>`` is ``train`` or ``test`` (Prompt-DT's splits; Cheetah-dir's test
tasks are its training tasks). Episodes end at 200 steps or, on Ant-dir, when
the torso leaves its healthy height (a termination). No env has a success
signal: the measure is the return.

The learner itself is :mod:`dataset_recipes.mujoco_learner`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import schema
from .commandline import Terminated
from .envs import check_seed
from .errors import RecipeError
from .minari_store import (
    Staging,
    build_lock,
    minari_root,
    params_digest,
    requirements,
)
from .mujoco_learner import (
    EPISODE_STEPS,
    REF_RANDOM_EPISODES,
    MujocoJob,
    env_sizes,
    run_mujoco_job,
    task_name,
)
from .mujoco_tasks import BENCHMARKS, benchmark_tasks, eval_reset_seed
from .replay import EVAL_EPISODES, ReplayDone, SACSettings, learners_interrupted
from .running import mp_context, positive_int, progress_bar

__all__ = [
    "DEFAULT_ENV_STEPS",
    "DEFAULT_EXPERT_EPISODES",
    "MUJOCO_NAMESPACE",
    "MujocoBuildResult",
    "build_mujoco_datasets",
    "env_metadata",
    "mujoco_dataset_ids",
]

MUJOCO_NAMESPACE = "harmodt-mujoco"
#: Bump when a change to the learner or its loop changes the recorded arrays.
MUJOCO_RECIPE_VERSION = 1
#: Default learner budget per task (env steps), sized from the learner's
#: measured speed (about 0.47 CPU-hours per 100,000 steps on HalfCheetah,
#: 0.44 on Ant: ``benchmarks/sac_throughput.py --mujoco``) so that
#: Cheetah-vel (40 tasks) and Cheetah-dir (2) build in about 7.5 CPU-hours
#: together; Ant-dir's 100,000 is for a subset of its 50 tasks (docs/recipes.md).
DEFAULT_ENV_STEPS: dict[str, int] = {
    "cheetah-vel": 35_000,
    "cheetah-dir": 100_000,
    "ant-dir": 100_000,
}
#: Expert rollouts per task (Prompt-DT's expert data: a few dozen per task).
DEFAULT_EXPERT_EPISODES = 20
DEFAULT_CHUNK_EPISODES = 10
KINDS = ("expert", "replay")
SPLITS = ("train", "test")
ALGORITHM_NAME = {
    "expert": "d3rlpy SAC trained online per task; rollouts of its final "
    "deterministic policy",
    "replay": "d3rlpy SAC trained online per task; every episode of its replay buffer",
}


def mujoco_dataset_ids(benchmark: str) -> dict[tuple[str, str], str]:
    """``(kind, split) -> dataset id`` of a benchmark's four datasets."""
    _check_benchmark(benchmark)
    return {
        (kind, split): f"{MUJOCO_NAMESPACE}/{benchmark}-{split}/{kind}-v0"
        for split in SPLITS
        for kind in KINDS
    }


def _check_benchmark(benchmark: str) -> str:
    if benchmark not in BENCHMARKS:
        raise RecipeError(
            f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}"
        )
    return benchmark


# ------------------------------------------------------------------- build


@dataclass(frozen=True)
class _MujocoPlan:
    benchmark: str
    seed: int
    episodes: int  # learner episodes per task
    chunk_episodes: int
    expert_episodes: int
    sac: SACSettings
    train_tasks: int | None  # the first N training tasks; None: all

    def split(self) -> dict[str, list[int]]:
        """The tasks of each split this build covers."""
        tasks = benchmark_tasks(self.benchmark)
        train = [int(t) for t in tasks["train"]]
        if self.train_tasks is not None:
            train = train[: self.train_tasks]
        return {"train": train, "test": [int(t) for t in tasks["test"]]}

    def params(self) -> dict[str, Any]:
        return {
            "recipe_version": MUJOCO_RECIPE_VERSION,
            "benchmark": self.benchmark,
            "seed": self.seed,
            "env_steps_per_task": self.episodes * EPISODE_STEPS,
            "chunk_episodes": self.chunk_episodes,
            "expert_episodes": self.expert_episodes,
            "sac": self.sac.to_json(),
            "train_tasks": self.train_tasks,
        }

    def tasks(self) -> list[int]:
        """Every task a split uses, in index order."""
        split = self.split()
        return sorted({*split["train"], *split["test"]})

    def command(self) -> str:
        parts = ["harmodt-recipes", "mujoco", "--benchmark", self.benchmark]
        parts += ["--env-steps-per-task", str(self.episodes * EPISODE_STEPS)]
        parts += ["--expert-episodes", str(self.expert_episodes)]
        parts += ["--seed", str(self.seed)]
        if self.train_tasks is not None:
            parts += ["--train-tasks", str(self.train_tasks)]
        if self.chunk_episodes != DEFAULT_CHUNK_EPISODES:
            parts += ["--chunk-episodes", str(self.chunk_episodes)]
        if self.sac != SACSettings():
            parts += ["--sac", json.dumps(self.sac.to_json(), separators=(",", ":"))]
        return shlex.join(parts)


def _make_plan(
    benchmark: str,
    env_steps_per_task: int,
    seed: int,
    chunk_episodes: int,
    expert_episodes: int,
    sac: SACSettings | None,
    train_tasks: int | None,
) -> _MujocoPlan:
    _check_benchmark(benchmark)
    if (
        isinstance(env_steps_per_task, bool)
        or not isinstance(env_steps_per_task, int | np.integer)
        or env_steps_per_task < EPISODE_STEPS
        or env_steps_per_task % EPISODE_STEPS
    ):
        raise RecipeError(
            "env steps per task must be a positive multiple of the episode "
            f"length {EPISODE_STEPS}, got {env_steps_per_task!r}"
        )
    settings = sac or SACSettings()
    settings.check()
    return _MujocoPlan(
        benchmark,
        check_seed(seed),
        int(env_steps_per_task) // EPISODE_STEPS,
        positive_int("chunk episodes", chunk_episodes, 1000),
        positive_int("expert episodes", expert_episodes, 1000),
        settings,
        None if train_tasks is None else positive_int("train tasks", train_tasks, 50),
    )


def _jobs(plan: _MujocoPlan, folder: Path) -> list[MujocoJob]:
    sizes = env_sizes(plan.benchmark)
    return [
        MujocoJob(
            plan.benchmark,
            task,
            plan.seed,
            plan.episodes,
            plan.chunk_episodes,
            plan.expert_episodes,
            plan.sac,
            str(folder),
            *sizes,
        )
        for task in plan.tasks()
    ]


def _run_jobs(
    jobs: Sequence[MujocoJob], workers: int, progress: bool, stream: TextIO | None
) -> None:
    """Every task's learner and expert rollouts, ``workers`` at a time; a bar
    counts finished tasks."""
    bar = progress_bar("{task.description}", "cpu", stream) if progress else None
    row = bar.add_task("tasks", total=len(jobs), cpu="") if bar else None
    cpu = 0.0

    def done(result: ReplayDone) -> None:
        nonlocal cpu
        cpu += result.cpu_seconds
        if bar is not None:
            bar.update(row, advance=1, cpu=f"{cpu / 3600:.2f} CPU-h")

    if bar is not None:
        bar.start()
    try:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                done(run_mujoco_job(job))
            return
        from .rollout import init_worker

        with mp_context().Pool(
            min(workers, len(jobs)), initializer=init_worker
        ) as pool:
            for result in pool.imap_unordered(run_mujoco_job, jobs):
                done(result)
    finally:
        if bar is not None:
            bar.stop()


# --------------------------------------------------------------- assembling


@dataclass(frozen=True)
class _TaskFacts:
    """One task's staged files and what they measure."""

    name: str
    value: float
    replay_files: tuple[Path, ...]
    expert_file: Path
    expert_return: float  # the final policy, held-out resets
    random_return: float
    curve: tuple[tuple[int, float], ...]  # (episodes, greedy return) at tenths
    cpu_seconds: float


def _facts(job: MujocoJob) -> _TaskFacts:
    curve: list[tuple[int, float]] = []
    for first in job.chunk_starts():
        with np.load(job.chunk_path(first)) as z:
            curve += zip(
                z["eval_after_episodes"].tolist(),
                z["eval_return"].tolist(),
                strict=True,
            )
    with np.load(job.expert_path) as z:
        expert, rand = (
            float(z["expert_returns"].mean()),
            float(z["random_returns"].mean()),
        )
        cpu = float(z["cpu_seconds"])
    values = benchmark_tasks(job.benchmark)["values"]
    return _TaskFacts(
        job.task,
        float(values[job.task_index]),
        tuple(job.chunk_path(f) for f in job.chunk_starts()),
        job.expert_path,
        expert,
        rand,
        tuple(curve),
        cpu,
    )


def _buffers(path: Path, task_id: int, name: str, width: int) -> list[Any]:
    """Minari episode buffers of a staged file (variable-length episodes)."""
    from minari.data_collector import EpisodeBuffer

    out = []
    label = np.bytes_(name.encode("ascii"))
    with np.load(path) as z:
        o = s = 0
        for k, length in enumerate(z["lengths"].tolist()):
            infos = {
                schema.INFO_TASK_ID: np.full(length + 1, task_id, dtype=np.int64),
                schema.INFO_TASK_NAME: np.full(length + 1, label, dtype=f"S{width}"),
            }
            out.append(
                EpisodeBuffer(
                    observations=z["observations"][o : o + length + 1],
                    actions=z["actions"][s : s + length],
                    rewards=z["rewards"][s : s + length],
                    terminations=z["terminations"][s : s + length],
                    truncations=z["truncations"][s : s + length],
                    infos=infos,
                    options={
                        "episode_index": int(z["episode_index"][k]),
                        "reset_seed": int(z["make_seed"][k]),
                    },
                )
            )
            o += length + 1
            s += length
    return out


def env_metadata(benchmark: str, seed: int, tasks: Sequence[int]) -> dict[str, Any]:
    """The ``schema.METADATA_ENV`` value of a MuJoCo dataset: how to rebuild
    each task's env and which resets are held out."""
    ident, cls = BENCHMARKS[benchmark]
    return {
        "family": "mujoco",
        "benchmark": benchmark,
        "max_episode_steps": EPISODE_STEPS,
        "seed": seed,
        "eval_reset_seed_rule": (
            f"held-out episode j resets with seed {eval_reset_seed(seed, 0)} + j "
            "(dataset_recipes.mujoco_tasks.eval_reset_seed)"
        ),
        "tasks": {
            task_name(benchmark, t): {
                "id": ident,
                "entry_point": f"dataset_recipes.mujoco_envs:{cls}",
                "kwargs": {"task": int(t)},
                "max_episode_steps": EPISODE_STEPS,
            }
            for t in tasks
        },
    }


def _card(
    target: str,
    kind: str,
    split: str,
    plan: _MujocoPlan,
    facts: Sequence[_TaskFacts],
    returns: dict[str, np.ndarray],
) -> str:
    """The dataset's markdown description."""
    what = (
        f"{plan.expert_episodes} rollouts per task of the task's final SAC "
        "policy, acting deterministically"
        if kind == "expert"
        else f"every one of the {plan.episodes} episodes the learner collected "
        "per task, in order (random warm-up, then the learning policy)"
    )
    lines = [
        f"# {target}",
        "",
        f"{plan.benchmark} ({split} tasks of Prompt-DT's split): {what}. "
        f"d3rlpy's SAC trained online for {plan.episodes * EPISODE_STEPS:,} env "
        f"steps per task ({plan.sac.describe()}). Episodes: {EPISODE_STEPS} steps, "
        "or fewer where the env terminates. Reference scores: uniform random "
        f"actions ({REF_RANDOM_EPISODES} episodes) and the final policy "
        f"({EVAL_EPISODES} episodes), on held-out resets.",
        "",
        "| task | parameter | episodes | data return (mean ± std) | "
        "final policy return | random return |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in facts:
        r = returns[f.name]
        lines.append(
            f"| {f.name} | {f.value:.4g} | {len(r)} | {r.mean():.1f} ± {r.std():.1f} "
            f"| {f.expert_return:.1f} | {f.random_return:.1f} |"
        )
    cpu = sum(f.cpu_seconds for f in facts) / 3600
    lines += [
        "",
        f"Learner CPU time for these tasks: {cpu:.2f} CPU-hours.",
        "",
        f"Rebuild: `{plan.command()}`",
    ]
    return "\n".join(lines)


def _write(
    staging: Staging,
    target: str,
    kind: str,
    split: str,
    plan: _MujocoPlan,
    facts: Sequence[_TaskFacts],
    author: str,
    code_permalink: str,
) -> Path:
    """Write one of the four datasets under the staging folder."""
    import gymnasium as gym
    import minari

    files = {
        f.name: ((f.expert_file,) if kind == "expert" else f.replay_files)
        for f in facts
    }
    returns = {}
    for f in facts:
        rs = []
        for path in files[f.name]:
            with np.load(path) as z:
                rs.append(z["returns"])
        returns[f.name] = np.concatenate(rs)
    obs_size, act_size = env_sizes(plan.benchmark)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (act_size,), np.float32)
    task_indices = [int(f.name.rsplit("-", 1)[1]) for f in facts]
    env_meta = env_metadata(plan.benchmark, plan.seed, task_indices)
    refs = {
        f.name: {
            "ref_min_score": f.random_return,
            "ref_max_score": f.expert_return,
            "episodes": EVAL_EPISODES,
        }
        for f in facts
    }
    card = _card(target, kind, split, plan, facts, returns)
    where = staging.folder / "assemble" / f"{kind}-{split}"
    shutil.rmtree(where, ignore_errors=True)
    width = max(len(f.name) for f in facts)
    ref_min = float(np.mean([f.random_return for f in facts]))
    ref_max = float(np.mean([f.expert_return for f in facts]))
    with minari_root(where), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = minari.create_dataset_from_buffers(
            target,
            [],
            algorithm_name=ALGORITHM_NAME[kind],
            author=author,
            code_permalink=code_permalink,
            action_space=act_space,
            observation_space=obs_space,
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            num_episodes_average_score=EVAL_EPISODES,
            description=card,
            requirements=requirements(),
        )
        for task_id, f in enumerate(facts):
            for path in files[f.name]:
                ds.storage.update_episodes(_buffers(path, task_id, f.name, width))
        ds.storage.update_metadata(
            {
                schema.METADATA_TASKS: [f.name for f in facts],
                schema.METADATA_ENV: env_meta,
                schema.METADATA_REF_SCORES: refs,
                schema.METADATA_STATS: {
                    f.name: {
                        "task": f.name,
                        "episodes": int(len(returns[f.name])),
                        "mean_return": float(returns[f.name].mean()),
                        "std_return": float(returns[f.name].std()),
                    }
                    for f in facts
                },
                schema.METADATA_RECIPE: {
                    **plan.params(),
                    "kind": kind,
                    "split": split,
                    "command": plan.command(),
                },
                schema.METADATA_LEARNER: {
                    f.name: {
                        "greedy_return": [list(p) for p in f.curve],
                        "cpu_seconds": f.cpu_seconds,
                    }
                    for f in facts
                },
                "ref_min_score": ref_min,
                "ref_max_score": ref_max,
                "num_episodes_average_score": EVAL_EPISODES,
            }
        )
    return where / target


# --------------------------------------------------------------------- API


@dataclass(frozen=True)
class MujocoBuildResult:
    """What a MuJoCo build produced: its datasets, per-task expert and random
    returns, and the learners' CPU time."""

    benchmark: str
    datasets: dict[tuple[str, str], Path]  # (kind, split) -> folder
    expert_returns: dict[str, float]
    random_returns: dict[str, float]
    cpu_seconds: float
    seconds: float


def build_mujoco_datasets(
    benchmark: str,
    env_steps_per_task: int,
    *,
    expert_episodes: int = DEFAULT_EXPERT_EPISODES,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    chunk_episodes: int = DEFAULT_CHUNK_EPISODES,
    sac: SACSettings | None = None,
    train_tasks: int | None = None,
    progress: bool = True,
    author: str = "harmodt developers",
    code_permalink: str = "https://github.com/harmodt/harmodt/tree/main/dataset_recipes",
    progress_stream: TextIO | None = None,
) -> MujocoBuildResult:
    """Train SAC on every task of ``benchmark`` and publish its four datasets
    (expert and replay, training and test tasks).

    Args:
        benchmark: ``cheetah-vel``, ``cheetah-dir`` or ``ant-dir``.
        env_steps_per_task: each learner's budget, a multiple of 200.
        expert_episodes: rollouts of each final policy in the expert data.
        seed: the recipe seed (resets, warm-up actions, the learners' RNGs).
        workers: learners at once, one process and one torch thread each
            (results do not depend on it).
        chunk_episodes: episodes between two learner checkpoints.
        sac: SAC's settings (default :class:`SACSettings`).
        train_tasks: build only the first N training tasks (the test tasks
            always); the cards and the recipe metadata say so.

    Raises:
        RecipeError: bad input (before any environment is stepped).
        BuildInterrupted: Ctrl-C or SIGTERM; each learner's last checkpoint is
            kept, a re-run resumes.
    """
    start = time.perf_counter()
    plan = _make_plan(
        benchmark,
        env_steps_per_task,
        seed,
        chunk_episodes,
        expert_episodes,
        sac,
        train_tasks,
    )
    n_workers = positive_int("workers", workers, 1024)
    ids = mujoco_dataset_ids(benchmark)
    params = plan.params()
    staging = Staging.open(
        list(ids.values()),
        f"{MUJOCO_NAMESPACE}__{benchmark}",
        params_digest(params),
        overwrite,
    )
    with build_lock(staging.lock, f"the {benchmark} datasets"):
        staging.prepare(params, drop_others=False)
        jobs = _jobs(plan, staging.folder)
        try:
            _run_jobs(jobs, n_workers, progress, progress_stream)
        except KeyboardInterrupt as exc:
            why = "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt"
            raise learners_interrupted(jobs, why) from exc
        facts = {job.task_index: _facts(job) for job in jobs}
        split_tasks = plan.split()
        built = {
            key: _write(
                staging,
                target,
                *key,
                plan,
                [facts[t] for t in split_tasks[key[1]]],
                author,
                code_permalink,
            )
            for key, target in ids.items()
        }
        paths = {
            key: staging.publish(folder, ids[key], overwrite)
            for key, folder in built.items()
        }
        staging.remove()
    return MujocoBuildResult(
        benchmark,
        paths,
        {f.name: f.expert_return for f in facts.values()},
        {f.name: f.random_return for f in facts.values()},
        sum(f.cpu_seconds for f in facts.values()),
        time.perf_counter() - start,
    )
