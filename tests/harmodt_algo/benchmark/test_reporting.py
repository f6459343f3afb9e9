"""report: the markdown table, CSVs and plots of a results folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo.benchmark import (
    BenchmarkError,
    report,
)

from ._matrix import Matrix

# -------------------------------------------------------------------- report


def test_report_writes_table_csv_and_plots(matrix: Matrix, tmp_path: Path) -> None:
    paths = report(matrix.out, tmp_path / "docs")
    names = sorted(p.name for p in paths)
    slug = matrix.dataset_id.replace("/", "__")
    assert names == sorted(
        [
            "benchmark.md",
            "cells.csv",
            "tasks.csv",
            "success.png",
            f"task_success_{slug}.png",
        ]
    )
    table = (tmp_path / "docs" / "benchmark.md").read_text()
    group = matrix.dataset_id.split("/")[1]
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert f"| {group} expert |" in header and "time / cell" in header
    rows = [line for line in table.splitlines() if line.startswith("| MT")]
    assert any(r.startswith("| MTDT |") for r in rows)
    assert any(r.startswith("| MTBC |") for r in rows)
    with (tmp_path / "docs" / "cells.csv").open() as fh:
        cells = list(csv.DictReader(fh))
    assert sorted(c["method"] for c in cells) == ["mtbc", "mtdt"]
    assert all(0.0 <= float(c["success_mean"]) <= 1.0 for c in cells)
    with (tmp_path / "docs" / "tasks.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4  # 2 cells x 2 tasks
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert path.stat().st_size > 2000


def test_report_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="no finished cells"):
        report(tmp_path, tmp_path / "docs")


def test_a_dataset_without_success_is_reported_by_its_return(
    matrix: Matrix, tmp_path: Path
) -> None:
    # the matrix's cells, relabelled as if their data had no success signal
    # (what dataset_facts records for a MuJoCo recipe)
    out = tmp_path / "results"
    for method in ("mtdt", "mtbc"):
        cell = json.loads(matrix.cell(method).read_text())
        cell["dataset"]["measure"] = "return"
        cell["return_mean"] = 123.4 if method == "mtdt" else -5.0
        cell["return"] = {t: cell["return_mean"] for t in cell["return"]}
        path = out / matrix.cell(method).relative_to(matrix.out)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(cell))
    report(out, tmp_path / "docs", plots=False)
    table = (tmp_path / "docs" / "benchmark.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert "*(return)*" in header
    assert "| MTDT | 123.4 |" in table and "| MTBC | -5.0 |" in table
    assert "## Per-task return:" in table and "Per-task success" not in table
