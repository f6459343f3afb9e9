"""How every recipe build runs: its integer arguments checked the same way,
worker processes started safely (``forkserver``/``spawn``, never ``fork``,
which would copy MuJoCo and torch state), and one kind of progress bar."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from .envs import MAX_EPISODE_STEPS, check_seed
from .errors import RecipeError
from .suites import canonical_suite, resolve_tasks

__all__ = ["SuitePlan", "mp_context", "positive_int", "progress_bar"]


def positive_int(name: str, value: Any, upper: int) -> int:
    """``value`` as an int in [1, ``upper``], else :class:`RecipeError`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise RecipeError(f"{name} must be an integer in [1, {upper}], got {value!r}")
    if not 1 <= int(value) <= upper:
        raise RecipeError(f"{name} must be in [1, {upper}], got {value}")
    return int(value)


def mp_context() -> Any:
    """The start method for build workers: forkserver (with the rollout code
    preloaded) where the platform has it, spawn elsewhere."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["dataset_recipes.rollout"])
        return ctx
    return mp.get_context("spawn")


def progress_bar(description: str, field: str, stream: TextIO | None) -> Any:
    """A rich progress display of the recipes' builds: the task description,
    the bar, done/total, one text field, elapsed and remaining time."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[{field}]}}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream or sys.stderr),
    )


@dataclass(frozen=True)
class SuitePlan:
    """What every recipe build plans: its tasks (and the suite that names
    them), its seed, the episode length and the episodes per staged chunk."""

    tasks: tuple[str, ...]
    suite: str | None
    seed: int
    max_episode_steps: int
    chunk_episodes: int

    @staticmethod
    def checked(
        suite: str | None,
        tasks: str | Sequence[str] | None,
        seed: int,
        max_episode_steps: int,
        chunk_episodes: int,
        max_chunk: int,
    ) -> dict[str, Any]:
        """These fields validated (:class:`RecipeError` on bad input), as
        keywords for a subclass's constructor."""
        resolved = resolve_tasks(suite, tasks)
        return {
            "tasks": resolved,
            "suite": canonical_suite(resolved),
            "seed": check_seed(seed),
            "max_episode_steps": positive_int(
                "max episode steps", max_episode_steps, MAX_EPISODE_STEPS
            ),
            "chunk_episodes": positive_int("chunk episodes", chunk_episodes, max_chunk),
        }
