"""run_matrix: the cells it writes, their budget, determinism, one writer per
cell, outputs checked first, and the mask facts a HarmoDT cell records.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import benchmark
from harmodt_algo.benchmark import (
    BenchmarkError,
    BenchmarkSettings,
    cell_path,
    parse_dataset,
    run_matrix,
)

from ._matrix import BUILD, CELL_KEYS, DATASET, OVERRIDES, SETTINGS, Matrix, load_json

# --------------------------------------------------------------------- cells


def test_matrix_builds_the_dataset_and_writes_complete_cells(matrix: Matrix) -> None:
    assert matrix.summary.ok and not matrix.summary.skipped
    assert any("building" in line for line in matrix.log)
    assert matrix.dataset_id.startswith("metaworld-v3/custom-")
    assert sorted(matrix.summary.ran) == sorted(
        [matrix.cell("mtdt"), matrix.cell("mtbc")]
    )
    for method, kind in (("mtdt", "harmodt"), ("mtbc", "d3rlpy")):
        cell = load_json(matrix.cell(method))
        assert CELL_KEYS <= set(cell), CELL_KEYS - set(cell)
        assert (cell["method"], cell["kind"], cell["seed"]) == (method, kind, 0)
        assert cell["steps"] == 4 and cell["budget"]["steps"] == 4
        assert set(cell["success"]) == {"reach-v3", "button-press-topdown-v3"}
        assert set(cell["return"]) == set(cell["success"])
        assert 0.0 <= cell["success_mean"] <= 1.0
        assert cell["train_time_s"] > 0 and cell["eval_time_s"] > 0
        assert cell["param_count"] > 0
        assert cell["evaluation"]["n_episodes"] == 1
        assert cell["dataset"]["episodes_per_task"] == 2
        assert cell["budget"]["overrides"] == json.loads(json.dumps(OVERRIDES[method]))
        # the cell names the code that ran it: this checkout's commit
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert cell["versions"]["harmodt_commit"].split("+")[0] == head
    # HarmoDT's seed config follows the cell seed; sizes follow the overrides
    mtdt = load_json(matrix.cell("mtdt"))
    assert mtdt["config"]["params"]["seed"] == 0
    assert mtdt["config"]["params"]["embed_size"] == 32
    assert mtdt["target_returns"] is not None
    # no temp files left next to the cells
    assert not list(matrix.out.rglob("*.tmp"))


def test_resume_skips_finished_cells_and_recomputes_deleted_ones(
    matrix: Matrix, store: Path
) -> None:
    kept, deleted = matrix.cell("mtdt"), matrix.cell("mtbc")
    before = kept.stat().st_mtime_ns
    content = kept.read_bytes()
    deleted.unlink()
    log: list[str] = []
    summary = run_matrix(
        ["mtdt", "mtbc"], [DATASET], [0], matrix.out, SETTINGS, log=log.append, **BUILD
    )
    assert summary.skipped == [kept]
    assert summary.ran == [deleted]
    assert kept.stat().st_mtime_ns == before and kept.read_bytes() == content
    assert deleted.exists() and load_json(deleted)["method"] == "mtbc"
    assert any("skip" in line and "mtdt" in line for line in log)
    assert not any("building" in line for line in log)  # the dataset exists


def test_finished_cell_with_another_budget_is_an_error(
    matrix: Matrix, store: Path
) -> None:
    before = matrix.cell("mtdt").stat().st_mtime_ns
    other = BenchmarkSettings(steps=5, eval_episodes=1, overrides=OVERRIDES)
    with pytest.raises(BenchmarkError, match="different budget.*--overwrite"):
        run_matrix("mtdt", [DATASET], [0], matrix.out, other, log=lambda _: None)
    assert matrix.cell("mtdt").stat().st_mtime_ns == before


def test_same_seed_same_cell(matrix: Matrix, store: Path) -> None:
    import minari

    from harmodt_algo import as_multitask_dataset

    spec = parse_dataset(DATASET)
    dataset = minari.load_dataset(spec.dataset_id)
    data = as_multitask_dataset(dataset)
    runs = [
        benchmark.run_cell("mtbc", spec, dataset, data, 3, SETTINGS)[0]
        for _ in range(2)
    ]
    assert runs[0]["final_metrics"]["loss"] == runs[1]["final_metrics"]["loss"]
    assert runs[0]["return"] == runs[1]["return"]


def test_harmodt_cells_record_how_far_the_masks_moved(
    matrix: Matrix, store: Path, tmp_path: Path
) -> None:
    # dense MTDT: masks never move and every task uses every weight
    dense = load_json(matrix.cell("mtdt"))["masks"]
    assert dense["drift_mean"] == 0.0
    assert dense["overlap_initial"] == dense["overlap_final"] == 1.0
    # HarmoDT-F rewiring half of each mask at every other step moves them
    options = {**OVERRIDES["mtdt"], "mask_interval": 2, "change_fraction": 0.5}
    settings = BenchmarkSettings(
        steps=4,
        eval_episodes=1,
        overrides={"harmodt-f": {**options, "change_schedule": "constant"}},
        curve_every=2,
    )
    summary = run_matrix("harmodt-f", [DATASET], [0], tmp_path, settings)
    assert summary.ok
    cell = load_json(cell_path(tmp_path, matrix.dataset_id, "harmodt-f", 0))
    moved = cell["masks"]
    assert moved["interval"] == 2
    assert moved["settings"]["change_fraction"] == 0.5
    assert moved["settings"]["protect_1d"] is True
    # two updates, each swapping all ~20 % inactive entries (k is clipped to
    # them): about half of the ~80 % active entries were dropped once
    assert 0.3 < moved["turnover_mean"] <= 1.0
    assert moved["turnover_mean"] >= moved["drift_mean"]
    # the learning curve: the mid-run evaluation, then the final one
    assert [p["step"] for p in cell["curve"]] == [2, 4]
    assert cell["curve"][-1]["success_mean"] == cell["success_mean"]
    assert cell["budget"]["curve_every"] == 2
    repro = moved["reproducibility"]
    assert 0.0 <= repro["drop_jaccard"] <= 1.0 and 0.0 <= repro["grow_jaccard"] <= 1.0
    assert 0.0 < repro["drop_chance"] < 1.0 and repro["k"] > 0
    assert dense.get("reproducibility") is None  # nothing is rewired
    assert set(moved["drift"]) == {"reach-v3", "button-press-topdown-v3"}
    assert 0.0 < moved["drift_mean"] <= 1.0
    assert moved["overlap_final"] < 1.0 and moved["overlap_initial"] < 1.0


def test_a_cell_has_one_writer(matrix: Matrix, store: Path, tmp_path: Path) -> None:
    """A cell another process holds is refused before any work, naming the
    holder; a cell finished meanwhile is not recomputed."""

    from harmodt_algo.locks import exclusive

    lock = cell_path(tmp_path, matrix.dataset_id, "mtdt", 0).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with exclusive(lock, "cell"), pytest.raises(BenchmarkError) as info:
        run_matrix("mtdt", [DATASET], [0], tmp_path, SETTINGS, **BUILD)
    assert f"in use by process {os.getpid()}" in str(info.value)
    assert not cell_path(tmp_path, matrix.dataset_id, "mtdt", 0).exists()
    with exclusive(lock, "cell"):  # released by the refused writer too
        pass


def test_outputs_are_checked_before_any_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "file"
    taken.write_text("mine")
    base = ["run", "--methods", "mtdt", "--datasets", "MT5:expert", "--steps", "1"]
    for extra, needle in (
        (["--out", str(taken)], "--out"),
        (["--out", str(tmp_path / "o"), "--report", str(taken)], "--report"),
    ):
        code = benchmark.main([*base, *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert needle in err and "is a file, not a folder" in err
    assert taken.read_text() == "mine"
    assert not list(tmp_path.rglob("*.json"))
