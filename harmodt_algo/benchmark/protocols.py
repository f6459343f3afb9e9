"""Both protocols of a set of cells: (a) Meta-World's, the final checkpoint
on the final evaluation's goals, and (b) the HarmoDT release's, the best of
the learning curve's evaluations; their difference is the selection bias."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .cellsets import Cell, columns, group_cells, method_order
from .stats import MeanCI, mean_ci

__all__ = ["ProtocolRow", "best_point", "curve_goals", "protocol_rows"]


@dataclasses.dataclass(frozen=True)
class ProtocolRow:
    """One method on one dataset under both protocols, success in % per seed.

    ``final`` is (a), Meta-World's protocol: the final checkpoint on the final
    evaluation's ``final_goals`` goals per task. ``best`` is (b), the HarmoDT
    release's: the maximum over the curve's points (the last step's
    included) of the mean success over tasks, on ``curve_goals`` goals per
    task, ``evaluations`` points per cell; only cells with a curve have one.
    The goal counts and point counts are sets: one value unless the seeds'
    cells were run differently.
    """

    dataset_id: str
    method: str
    final: dict[int, float]
    final_goals: tuple[int, ...]
    best: dict[int, float]
    best_step: dict[int, int]
    evaluations: tuple[int, ...]
    curve_goals: tuple[int, ...]

    def bias(self) -> MeanCI | None:
        """(b − a), the selection bias: the mean over seeds of each seed's
        difference (paired: one cell has both) with its 95 % t-interval
        (:func:`.stats.mean_ci`; no interval for one seed); None without a
        curve."""
        seeds = sorted(set(self.best) & set(self.final))
        if not seeds:
            return None
        return mean_ci([self.best[s] - self.final[s] for s in seeds])


def curve_goals(cell: Cell) -> int:
    """Goals per task of a cell's curve points (cells made before
    ``curve_episodes`` existed evaluated the curve on the final's goals)."""
    points = cell["curve"]
    stored = {int(p["n_episodes"]) for p in points if "n_episodes" in p}
    if len(stored) == 1:
        return stored.pop()
    budget = cell["budget"]
    return int(budget.get("curve_episodes", budget["eval_episodes"]))


def best_point(cell: Cell) -> Mapping[str, Any]:
    """The curve point with the highest mean success (the first of ties, as
    the release keeps the first best)."""
    points: list[Mapping[str, Any]] = list(cell["curve"])
    return max(points, key=lambda p: float(p["success_mean"]))


def _protocol_row(dataset_id: str, method: str, group: Sequence[Cell]) -> ProtocolRow:
    curved = [c for c in group if c.get("curve")]
    best = {int(c["seed"]): best_point(c) for c in curved}
    return ProtocolRow(
        dataset_id=dataset_id,
        method=method,
        final={int(c["seed"]): 100 * float(c["success_mean"]) for c in group},
        final_goals=tuple(sorted({int(c["budget"]["eval_episodes"]) for c in group})),
        best={s: 100 * float(p["success_mean"]) for s, p in best.items()},
        best_step={s: int(p["step"]) for s, p in best.items()},
        evaluations=tuple(sorted({len(c["curve"]) for c in curved})),
        curve_goals=tuple(sorted({curve_goals(c) for c in curved})),
    )


def protocol_rows(cells: Sequence[Cell]) -> list[ProtocolRow]:
    """Every (dataset, method) under both protocols, in table order (datasets
    as the columns, methods as the rows of the main table)."""
    groups = group_cells(cells)
    return [
        _protocol_row(column.dataset_id, method, groups[(column.dataset_id, method)])
        for column in columns(cells)
        for method in method_order(cells)
        if (column.dataset_id, method) in groups
    ]
