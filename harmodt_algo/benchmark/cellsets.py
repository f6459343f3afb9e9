"""A results folder's cells, grouped and ordered as every table shows
them: one column per dataset (suites, then qualities), one row per method
(the harness's order). Shared by the report and the protocol rows."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cells import read_cell
from .errors import BenchmarkError
from .methods import METHOD_LABELS, METHODS

__all__ = [
    "QUALITY_SHORT",
    "Cell",
    "Column",
    "Groups",
    "columns",
    "first_cell",
    "group_cells",
    "label",
    "load_cells",
    "method_order",
]

#: Short quality names for table columns ("MT5 near", like the paper).
QUALITY_SHORT = {
    "expert": "expert",
    "near-optimal": "near",
    "sub-optimal": "sub",
    "random": "random",
    "near-optimal-replay": "near replay",
    "sub-optimal-replay": "sub replay",
}
_SUITE_ORDER = ("MT1", "MT5", "MT10", "MT30", "MT50")
_QUALITY_ORDER = (
    "expert",
    "near-optimal",
    "sub-optimal",
    "random",
    "near-optimal-replay",
    "sub-optimal-replay",
)

Cell = Mapping[str, Any]
Groups = dict[tuple[str, str], list[Cell]]


def load_cells(results: str | Path) -> list[dict[str, Any]]:
    """Every finished cell under ``results`` (``*/*/seed*.json``)."""
    root = Path(results)
    if not root.is_dir():
        raise BenchmarkError(f"no results folder {str(root)!r}")
    cells = []
    for path in sorted(root.glob("*/*/seed*.json")):
        record = read_cell(path)
        if record is not None:
            record["_path"] = str(path)
            cells.append(record)
    return cells


@dataclasses.dataclass(frozen=True)
class Column:
    """One dataset column of the table."""

    dataset_id: str
    suite: str | None
    quality: str | None
    label: str

    def sort_key(self) -> tuple[int, int, str]:
        suite = _SUITE_ORDER.index(self.suite) if self.suite in _SUITE_ORDER else 99
        quality = (
            _QUALITY_ORDER.index(self.quality) if self.quality in _QUALITY_ORDER else 99
        )
        return (suite, quality, self.dataset_id)


def columns(cells: Sequence[Cell]) -> list[Column]:
    from dataset_recipes import parse_dataset_id

    seen: dict[str, Column] = {}
    for cell in cells:
        ident = str(cell["dataset_id"])
        if ident in seen:
            continue
        facts = cell.get("dataset") or {}
        suite = facts.get("suite")
        quality = facts.get("quality")
        recipe = parse_dataset_id(ident)
        group = str(suite) if suite else (recipe.group if recipe else ident)
        short = QUALITY_SHORT.get(str(quality), str(quality)) if quality else ""
        name = f"{group} {short}".strip()
        seen[ident] = Column(ident, suite, quality, name)
    ordered = sorted(seen.values(), key=Column.sort_key)
    labels = [c.label for c in ordered]
    return [
        dataclasses.replace(c, label=c.dataset_id) if labels.count(c.label) > 1 else c
        for c in ordered
    ]


def method_order(cells: Sequence[Cell]) -> list[str]:
    present = {str(c["method"]) for c in cells}
    known = [m for m in METHODS if m in present]
    return known + sorted(present - set(known))


def group_cells(cells: Sequence[Cell]) -> Groups:
    groups: Groups = defaultdict(list)
    for cell in cells:
        groups[(str(cell["dataset_id"]), str(cell["method"]))].append(cell)
    for group in groups.values():
        group.sort(key=lambda c: int(c["seed"]))
    return groups


def first_cell(cells: Sequence[Cell], dataset_id: str) -> Cell:
    return next(c for c in cells if c["dataset_id"] == dataset_id)


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)
