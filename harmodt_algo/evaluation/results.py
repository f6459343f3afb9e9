"""What an evaluation returns: per-episode records, per-task and suite means.

Why frozen dataclasses: two evaluations of the same model with the same seed
must compare equal (wall time excluded), and the flat ``metrics()`` feed a
training loop's logger (one d3rlpy CSV per name).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rich.table import Table

from ..naming import metric_key

__all__ = ["EpisodeResult", "TaskResult", "EvaluationResult", "merge_results"]


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

    The means over tasks weight every task equally (design §7).
    ``elapsed_s`` is wall time and takes no part in equality.
    ``stop_on_success``: episodes ended at their first success (returns and
    lengths are of the shortened episodes).
    """

    tasks: tuple[TaskResult, ...]
    n_episodes: int
    seed: int
    env_steps: int
    elapsed_s: float = dataclasses.field(default=0.0, compare=False)
    stop_on_success: bool = False

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
            **({"stop_on_success": True} if self.stop_on_success else {}),
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


def merge_results(results: list[EvaluationResult]) -> EvaluationResult:
    """One result over the tasks of several evaluations (e.g. one per
    dataset) made with the same episodes per task and seed."""
    if not results:
        raise ValueError("nothing to merge")
    if len({(r.n_episodes, r.seed, r.stop_on_success) for r in results}) != 1:
        raise ValueError(
            "results to merge need the same episodes per task, seed and stop_on_success"
        )
    if len(results) == 1:
        return results[0]
    return EvaluationResult(
        tasks=tuple(t for r in results for t in r.tasks),
        n_episodes=results[0].n_episodes,
        seed=results[0].seed,
        env_steps=sum(r.env_steps for r in results),
        elapsed_s=sum(r.elapsed_s for r in results),
        stop_on_success=results[0].stop_on_success,
    )
