"""Build a Minari dataset from a recipe: validate, stage, run workers, publish.

Why this design (each point is a requirement, see ``docs/recipes.md``):

* **Fail fast.** Every argument is validated (tasks, suite, quality, episodes,
  seed, dataset id, writable dataset path, existing id) before any environment
  is stepped; problems raise :class:`RecipeError` with the valid choices.
* **Deterministic and worker-independent.** The work is cut into chunks of
  consecutive episodes of one task (plus one reference-rollout item per task);
  each chunk is a pure function of the recipe parameters
  (:mod:`dataset_recipes.rollout`), so any number of worker processes
  (``forkserver``/``spawn``, never ``fork``) produces the same arrays.
* **Resumable and atomic.** Workers write finished chunks to
  ``<MINARI_DATASETS_PATH>/.staging/<id-slug>-<digest>/`` (temp file +
  ``os.replace``), a hidden folder outside every dataset folder. A re-run with the
  same parameters skips the staged chunks. The Minari dataset is then written
  into ``.staging/.../assemble/`` (with ``MINARI_DATASETS_PATH`` pointed there)
  and moved into place with one ``os.rename``: an interrupted build never leaves a
  half-written dataset under its id.
* **No silent overwrite.** An existing id is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__, schema
from .card import TaskStats, render_card, stats_markdown
from .commandline import Terminated
from .envs import (
    GOALS_PER_MAKE_SEED,
    MAX_EPISODE_STEPS,
    MAX_EPISODES_PER_TASK,
    env_metadata,
)
from .errors import BuildInterrupted, RecipeError
from .ids import (
    check_dataset_id,
    dataset_id,
)
from .minari_store import (
    MinariWrite,
    Staging,
    build_lock,
    datasets_root,
    params_digest,
    recipe_metadata,
)
from .qualities import QUALITY_NAMES, Quality, get_quality
from .rollout import (
    REF_EPISODES,
    WorkDone,
    WorkItem,
    read_refs,
    refs_file,
    run_work_item,
)
from .running import SuitePlan, mp_context, positive_int
from .running import progress_bar as progress_bar
from .suites import task_args

#: Bump when a change to the recipe changes the generated arrays.
RECIPE_VERSION = 1
#: Episodes per staged chunk (must divide 50 so a chunk never spans two make-seeds).
DEFAULT_CHUNK_EPISODES = 10
ALGORITHM_NAME = "dataset_recipes scripted-expert mixture"
DEFAULT_AUTHOR = "harmodt developers"
#: Placeholder until the project has a public repository; override per build.
DEFAULT_CODE_PERMALINK = "https://github.com/harmodt/harmodt/tree/main/dataset_recipes"


# ---------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Plan(SuitePlan):
    quality: Quality
    episodes_per_task: int

    def params(self) -> dict[str, Any]:
        return {
            "recipe_version": RECIPE_VERSION,
            "tasks": list(self.tasks),
            "quality": self.quality.name,
            "seed": self.seed,
            "episodes_per_task": self.episodes_per_task,
            "max_episode_steps": self.max_episode_steps,
            "chunk_episodes": self.chunk_episodes,
        }

    def items(self, folder: Path, refs_folder: Path | None) -> list[WorkItem]:
        """Work items: per task, its reference rollouts then its episode chunks.

        Reference rollouts do not depend on the quality (nor on the episodes per
        task), so their files are shared by every build with the same seed and
        episode length (``refs_folder``); ``None`` skips them.
        """
        out = []
        for task in self.tasks:
            if refs_folder is not None:
                refs = refs_file(refs_folder, task, self.seed, self.max_episode_steps)
                out.append(
                    WorkItem(
                        "refs",
                        task,
                        0,
                        REF_EPISODES,
                        self.seed,
                        self.quality.name,
                        self.max_episode_steps,
                        str(refs),
                    )
                )
            for first in range(0, self.episodes_per_task, self.chunk_episodes):
                count = min(self.chunk_episodes, self.episodes_per_task - first)
                out.append(
                    WorkItem(
                        "episodes",
                        task,
                        first,
                        count,
                        self.seed,
                        self.quality.name,
                        self.max_episode_steps,
                        str(folder / "chunks" / f"{task}-{first:08d}.npz"),
                    )
                )
        return out


def _make_plan(
    suite: str | None,
    tasks: str | Sequence[str] | None,
    quality: str,
    episodes_per_task: int,
    seed: int,
    max_episode_steps: int,
    chunk_episodes: int,
) -> _Plan:
    q = get_quality(quality)
    common = SuitePlan.checked(
        suite, tasks, seed, max_episode_steps, chunk_episodes, GOALS_PER_MAKE_SEED
    )
    episodes = positive_int(
        "episodes per task", episodes_per_task, MAX_EPISODES_PER_TASK
    )
    if GOALS_PER_MAKE_SEED % common["chunk_episodes"]:
        divisors = [d for d in range(1, 51) if GOALS_PER_MAKE_SEED % d == 0]
        raise RecipeError(
            f"chunk episodes must divide {GOALS_PER_MAKE_SEED}: one of {divisors}"
        )
    return _Plan(**common, quality=q, episodes_per_task=episodes)


# ----------------------------------------------------------------- execution


class _Progress:
    """Rich progress (episodes, tasks, transitions/s), or nothing."""

    def __init__(self, plan: _Plan, enabled: bool, stream: TextIO | None) -> None:
        self.enabled = enabled
        self.plan = plan
        self.generated_transitions = 0
        self.start = time.perf_counter()
        self._task_left: dict[str, int] = {}
        if not enabled:
            return
        self.progress = progress_bar("{task.description:>9}", "rate", stream)
        total_eps = len(plan.tasks) * plan.episodes_per_task
        self.eps = self.progress.add_task("episodes", total=total_eps, rate="")
        self.tasks = self.progress.add_task("tasks", total=len(plan.tasks), rate="")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def expect(self, items: Sequence[WorkItem]) -> None:
        for it in items:
            self._task_left[it.task] = self._task_left.get(it.task, 0) + 1

    def done(self, item: WorkItem, generated: bool) -> None:
        if generated and item.kind == "episodes":  # data only, not references
            self.generated_transitions += item.transitions
        self._task_left[item.task] -= 1
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = f"{self.generated_transitions / elapsed:,.0f} transitions/s"
        advance = item.count if item.kind == "episodes" else 0
        self.progress.update(self.eps, advance=advance, rate=rate)
        if self._task_left[item.task] == 0:
            self.progress.update(self.tasks, advance=1)


def _execute(
    plan: _Plan,
    items: Sequence[WorkItem],
    workers: int,
    progress: bool,
    stop_after_chunks: int | None,
    stream: TextIO | None = None,
) -> tuple[int, int]:
    """Run the missing items; returns (generated, reused)."""
    for folder in {Path(it.path).parent for it in items}:
        folder.mkdir(parents=True, exist_ok=True)
        if any(
            it.kind == "episodes" and Path(it.path).parent == folder for it in items
        ):
            # Our own (locked) chunk folder: leftovers of a killed run.
            for stale in folder.glob("*.tmp"):
                stale.unlink(missing_ok=True)
    # Longest items first: better balance across workers.
    pending = sorted(
        (it for it in items if not Path(it.path).exists()),
        key=lambda it: -it.transitions,
    )
    reused = len(items) - len(pending)
    generated = 0

    def interrupted(why: str) -> BuildInterrupted:
        staged = sum(Path(it.path).exists() for it in items)
        return BuildInterrupted(
            f"build interrupted ({why}): {staged}/{len(items)} chunks staged; "
            "re-run the same command to resume",
            staged_chunks=staged,
            total_chunks=len(items),
        )

    with _Progress(plan, progress, stream) as bar:
        bar.expect(items)
        todo = set(pending)
        for it in items:
            if it not in todo:
                bar.done(it, generated=False)
        try:
            if workers == 1 or len(pending) <= 1:
                for it in pending:
                    if stop_after_chunks is not None and generated >= stop_after_chunks:
                        raise interrupted("stop_after_chunks")
                    run_work_item(it)
                    generated += 1
                    bar.done(it, generated=True)
            else:
                ctx = mp_context()
                n = min(workers, len(pending))
                from .rollout import init_worker

                with ctx.Pool(n, initializer=init_worker) as pool:
                    done: WorkDone
                    for done in pool.imap_unordered(run_work_item, pending):
                        generated += 1
                        bar.done(done.item, generated=True)
                        if (
                            stop_after_chunks is not None
                            and generated >= stop_after_chunks
                            and generated < len(pending)
                        ):
                            raise interrupted("stop_after_chunks")
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
            why = "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt"
            raise interrupted(why) from exc
    return generated, reused


# ----------------------------------------------------------------- stats


def _load_stats(
    plan: _Plan, items: Sequence[WorkItem]
) -> tuple[list[TaskStats], dict[str, dict[str, float]]]:
    refs: dict[str, dict[str, float]] = {}
    per_task: dict[str, dict[str, list[np.ndarray]]] = {
        t: {"returns": [], "solved": [], "last": [], "degraded": []} for t in plan.tasks
    }
    for it in items:
        if it.kind == "refs":
            refs[it.task] = read_refs(it.path)
            continue
        with np.load(it.path) as z:
            acc = per_task[it.task]
            acc["returns"].append(z["returns"])
            acc["solved"].append(z["solved"])
            acc["last"].append(z["last_success"])
            acc["degraded"].append(z["degraded"])
    stats = []
    for task_id, task in enumerate(plan.tasks):
        acc = per_task[task]
        returns = np.concatenate(acc["returns"])
        ref = refs.get(task, {})
        stats.append(
            TaskStats(
                task=task,
                task_id=task_id,
                episodes=int(len(returns)),
                success_rate=float(np.concatenate(acc["solved"]).mean()),
                last_step_success_rate=float(np.concatenate(acc["last"]).mean()),
                mean_return=float(returns.mean()),
                std_return=float(returns.std()),
                degraded_episodes=int(np.concatenate(acc["degraded"]).sum()),
                ref_min_score=ref.get("ref_min_score", float("nan")),
                ref_max_score=ref.get("ref_max_score", float("nan")),
            )
        )
    return stats, refs


# ------------------------------------------------------------------ writing


def _default_command(plan: _Plan, dataset: str, default_id: str) -> str:
    parts = ["harmodt-recipes", "metaworld", *task_args(plan.suite, plan.tasks)]
    parts += ["--quality", plan.quality.name]
    parts += ["--episodes-per-task", str(plan.episodes_per_task)]
    parts += ["--seed", str(plan.seed)]
    if plan.max_episode_steps != MAX_EPISODE_STEPS:
        parts += ["--max-episode-steps", str(plan.max_episode_steps)]
    if dataset != default_id:
        parts += ["--dataset-id", dataset]
    return shlex.join(parts)


def _minari_write(
    plan: _Plan,
    target: str,
    items: Sequence[WorkItem],
    stats: Sequence[TaskStats],
    refs: dict[str, dict[str, float]],
    about: _Description,
) -> MinariWrite:
    """What dataset ``target`` is written from: every episode chunk, in order."""
    chunks = {
        task: [
            (it.path, it.count)
            for it in items
            if it.kind == "episodes" and it.task == task
        ]
        for task in plan.tasks
    }
    return MinariWrite(
        dataset=target,
        plan=plan,
        chunks=chunks,
        refs=refs,
        card=about.card,
        env_meta=about.env_meta,
        algorithm_name=ALGORITHM_NAME,
        author=about.author,
        code_permalink=about.code_permalink,
        metadata=recipe_metadata(
            stats,
            plan.params(),
            suite=plan.suite,
            command=about.command,
            success_band=plan.quality.success_band,
        ),
    )


# ---------------------------------------------------------------------- API


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    dataset_id: str
    path: Path
    tasks: tuple[str, ...]
    quality: str
    stats: tuple[TaskStats, ...]
    card: str
    episodes: int
    transitions: int
    generated_chunks: int
    reused_chunks: int
    seconds: float

    @property
    def success_band(self) -> tuple[float, float] | None:
        return get_quality(self.quality).success_band


def build_metaworld_dataset(
    suite: str | None = None,
    tasks: str | Sequence[str] | None = None,
    quality: str = "near-optimal",
    episodes_per_task: int = 100,
    *,
    seed: int = 0,
    workers: int = 1,
    dataset_id: str | None = None,
    overwrite: bool = False,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    chunk_episodes: int = DEFAULT_CHUNK_EPISODES,
    progress: bool = True,
    author: str = DEFAULT_AUTHOR,
    code_permalink: str = DEFAULT_CODE_PERMALINK,
    command: str | None = None,
    stop_after_chunks: int | None = None,
    progress_stream: TextIO | None = None,
) -> BuildResult:
    """Build (or resume) a Minari dataset of Meta-World v3 episodes.

    Args:
        suite: ``"MT1"``, ``"MT5"``, ``"MT10"``, ``"MT30"`` or ``"MT50"`` (any case).
        tasks: task names (``"a,b"`` or a sequence): a subset, or MT1's task.
        quality: one of ``expert``, ``near-optimal``, ``sub-optimal``, ``random``.
        episodes_per_task: episodes generated per task (> 0).
        seed: recipe seed; fixes goals, noise and the held-out evaluation goals.
        workers: worker processes (results do not depend on it).
        dataset_id: override the id given by :func:`dataset_id`.
        overwrite: replace an existing dataset with the same id.
        max_episode_steps: episode length (500, Meta-World's; shorter for tests).
        chunk_episodes: episodes per staged chunk (resume granularity; divides 50).
        progress: show a rich progress bar on stderr.
        author, code_permalink: Minari metadata.
        command: the command line to print in the card (default: reconstructed).
        stop_after_chunks: test hook: stop (as if interrupted) after generating
            this many new chunks.

    Raises:
        RecipeError: bad input (before any environment is stepped).
        BuildInterrupted: Ctrl-C, SIGTERM or ``stop_after_chunks``; staged work is kept.
    """
    start = time.perf_counter()
    plan = _make_plan(
        suite,
        tasks,
        quality,
        episodes_per_task,
        seed,
        max_episode_steps,
        chunk_episodes,
    )
    n_workers = positive_int("workers", workers, 1024)
    default_id = _default_id(plan)
    target = check_dataset_id(dataset_id) if dataset_id is not None else default_id
    params = plan.params()
    slug = target.replace("/", "__")
    staging = Staging.open([target], slug, params_digest(params), overwrite)
    with build_lock(staging.lock, target):
        staging.prepare(params, drop_others=True)
        items = plan.items(staging.folder, staging.parent / f"refs-v{RECIPE_VERSION}")
        generated, reused = _execute(
            plan, items, n_workers, progress, stop_after_chunks, progress_stream
        )
        stats, refs = _load_stats(plan, items)
        about = _describe(
            plan, target, default_id, stats, author, code_permalink, command
        )
        built = staging.assemble(_minari_write(plan, target, items, stats, refs, about))
        path = staging.publish(built, target, overwrite)
        staging.remove()
    return _build_result(
        plan, target, path, stats, about.card, generated, reused, start
    )


# ------------------------------------------------------------ build phases


@dataclass(frozen=True)
class _Description:
    """What the dataset says about itself: its card, and the metadata on how
    to rebuild its environments and who built it with which command."""

    card: str
    env_meta: dict[str, Any]
    command: str
    author: str
    code_permalink: str


def _describe(
    plan: _Plan,
    target: str,
    default_id: str,
    stats: Sequence[TaskStats],
    author: str,
    code_permalink: str,
    command: str | None,
) -> _Description:
    """The card and provenance of dataset ``target`` (``command`` defaults to
    the CLI command that rebuilds it)."""
    env_meta = env_metadata(
        plan.tasks, plan.seed, plan.episodes_per_task, plan.max_episode_steps
    )
    cmd = command or _default_command(plan, target, default_id)
    card = render_card(
        dataset_id=target,
        tasks=plan.tasks,
        suite=plan.suite,
        quality=plan.quality,
        seed=plan.seed,
        episodes_per_task=plan.episodes_per_task,
        max_episode_steps=plan.max_episode_steps,
        stats=stats,
        env_meta=env_meta,
        command=cmd,
        package_version=__version__,
        recipe_version=RECIPE_VERSION,
    )
    return _Description(card, env_meta, cmd, author, code_permalink)


def _build_result(
    plan: _Plan,
    target: str,
    path: Path,
    stats: Sequence[TaskStats],
    card: str,
    generated: int,
    reused: int,
    start: float,
) -> BuildResult:
    """The summary of a finished build (``start``: its ``perf_counter`` time)."""
    return BuildResult(
        dataset_id=target,
        path=path,
        tasks=plan.tasks,
        quality=plan.quality.name,
        stats=tuple(stats),
        card=card,
        episodes=len(plan.tasks) * plan.episodes_per_task,
        transitions=len(plan.tasks) * plan.episodes_per_task * plan.max_episode_steps,
        generated_chunks=generated,
        reused_chunks=reused,
        seconds=time.perf_counter() - start,
    )


def _default_id(plan: _Plan) -> str:
    return dataset_id(plan.tasks, plan.quality.name)


def measure_quality(
    suite: str | None = None,
    tasks: str | Sequence[str] | None = None,
    quality: str = "near-optimal",
    episodes_per_task: int = 10,
    *,
    seed: int = 0,
    workers: int = 1,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    with_refs: bool = False,
    progress: bool = True,
) -> list[TaskStats]:
    """Measure a quality level's per-task success and return without writing a dataset.

    Runs exactly the episodes a build with the same arguments would contain
    (calibration tool; ``harmodt-recipes calibrate``). Reference scores are NaN
    unless ``with_refs``.
    """
    plan = _make_plan(
        suite,
        tasks,
        quality,
        episodes_per_task,
        seed,
        max_episode_steps,
        DEFAULT_CHUNK_EPISODES,
    )
    n_workers = positive_int("workers", workers, 1024)
    with tempfile.TemporaryDirectory(prefix="recipe-calibrate-") as tmp:
        items = plan.items(Path(tmp), Path(tmp) / "refs" if with_refs else None)
        _execute(plan, items, n_workers, progress, None)
        stats, _ = _load_stats(plan, items)
    return stats


def stats_of(metadata: dict[str, Any]) -> list[TaskStats]:
    """The per-task :class:`TaskStats` stored in a recipe dataset's metadata."""
    raw = metadata.get(schema.METADATA_STATS) or {}
    tasks = metadata.get(schema.METADATA_TASKS) or list(raw)
    return [TaskStats.from_json(raw[t]) for t in tasks if t in raw]


__all__ = [
    "BuildResult",
    "QUALITY_NAMES",
    "build_metaworld_dataset",
    "dataset_id",
    "datasets_root",
    "measure_quality",
    "stats_markdown",
    "stats_of",
]
