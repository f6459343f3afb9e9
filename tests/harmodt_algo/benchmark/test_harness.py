"""Tests of the benchmark harness (``harmodt_algo.benchmark``) on a tiny matrix.

One module-scoped matrix (MTDT preset and MTBC, seed 0, 4 gradient steps, one
evaluation episode per task) on a 2-task recipe dataset of 2 expert episodes
x 40 steps that the harness itself builds (``task+task:quality``) inside a
temporary Minari store. Every test checks plumbing, not learning. The
resume tests stop an 8-step HarmoDT-F cell (mask updates every 2 steps, a
curve point at step 4, a checkpoint every 2 steps) with a real SIGTERM, in
process and in a subprocess, and compare the resumed cell with an
uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import HarmoDT, HarmoDTConfig, benchmark
from harmodt_algo.benchmark import (
    BenchmarkError,
    BenchmarkSettings,
    MatrixSummary,
    cell_path,
    check_methods,
    checkpoint_dir,
    parse_dataset,
    report,
    run_matrix,
)
from harmodt_algo.benchmark.resume import CellCheckpoints

ROOT = Path(__file__).resolve().parents[3]
TASKS = "reach-v3+button-press-topdown-v3"
DATASET = f"{TASKS}:expert"
OVERRIDES: dict[str, dict[str, Any]] = {
    "mtdt": {
        "embed_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "context_size": 5,
        "batch_size": 8,
        "max_timestep": 100,
    },
    "mtbc": {"hidden_units": [32], "batch_size": 16},
    "mtdt-d3rlpy": {
        "hidden_units": [16],
        "num_heads": 2,
        "num_layers": 1,
        "context_size": 5,
        "batch_size": 8,
        "max_timestep": 100,
    },
}
SETTINGS = BenchmarkSettings(steps=4, eval_episodes=1, overrides=OVERRIDES)
BUILD: dict[str, Any] = {"episodes_per_task": 2, "max_episode_steps": 40}
CELL_KEYS = {
    "schema",
    "dataset_id",
    "method",
    "seed",
    "budget",
    "steps",
    "param_count",
    "train_time_s",
    "eval_time_s",
    "success_mean",
    "return_mean",
    "success",
    "return",
    "evaluation",
    "dataset",
    "config",
    "versions",
    "resumed_from",
}


@dataclass
class Matrix:
    store: Path
    out: Path
    dataset_id: str
    summary: MatrixSummary
    log: list[str]

    def cell(self, method: str, seed: int = 0) -> Path:
        return cell_path(self.out, self.dataset_id, method, seed)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    store = tmp_path_factory.mktemp("minari")
    out = tmp_path_factory.mktemp("results")
    log: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        summary = run_matrix(
            "mtdt,mtbc", [DATASET], [0], out, SETTINGS, log=log.append, **BUILD
        )
    yield Matrix(store, out, parse_dataset(DATASET).dataset_id, summary, log)


@pytest.fixture
def store(matrix: Matrix, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(matrix.store))
    return matrix.store


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --------------------------------------------------------------------- cells


def test_matrix_builds_the_dataset_and_writes_complete_cells(matrix: Matrix) -> None:
    assert matrix.summary.ok and not matrix.summary.skipped
    assert any("building" in line for line in matrix.log)
    assert matrix.dataset_id.startswith("metaworld-v3/custom-")
    assert sorted(matrix.summary.ran) == sorted(
        [matrix.cell("mtdt"), matrix.cell("mtbc")]
    )
    for method, kind in (("mtdt", "harmodt"), ("mtbc", "d3rlpy")):
        cell = _load(matrix.cell(method))
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
    mtdt = _load(matrix.cell("mtdt"))
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
    assert deleted.exists() and _load(deleted)["method"] == "mtbc"
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


# ----------------------------------------------------------------------- CLI


def test_cli_runs_a_transformer_baseline_resumes_and_reports(
    matrix: Matrix,
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        "run",
        "--methods",
        "mtdt-d3rlpy",
        "--datasets",
        matrix.dataset_id,
        "--seeds",
        "1",
        "--steps",
        "4",
        "--eval-episodes",
        "1",
        "--out",
        str(tmp_path / "results"),
    ]
    args += [
        f"--set=mtdt-d3rlpy.{key}={json.dumps(value)}"
        for key, value in OVERRIDES["mtdt-d3rlpy"].items()
    ]
    assert benchmark.main(args) == 0
    cell = cell_path(tmp_path / "results", matrix.dataset_id, "mtdt-d3rlpy", 1)
    record = _load(cell)
    assert record["algorithm"] == "DecisionTransformer"
    assert record["config"]["params"]["context_size"] == 5
    assert set(record["target_returns"]) == set(record["success"])

    assert benchmark.main(args) == 0  # resumed: nothing to do
    assert "skip" in capsys.readouterr().out

    docs = tmp_path / "docs"
    code = benchmark.main(["report", str(tmp_path / "results"), "--out", str(docs)])
    assert code == 0
    assert "MTDT (d3rlpy)" in (docs / "benchmark.md").read_text()


def test_list_and_the_committed_matrix_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert benchmark.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(method in listed for method in benchmark.METHODS)

    example = runpy.run_path(str(ROOT / "examples" / "benchmark_matrix.py"))
    lines = example["commands"]()
    assert len(lines) == 5 and lines[-1].split()[3] == "report"
    datasets = set()
    for line in lines[:-1]:
        argv = shlex.split(line)[3:]
        args = benchmark.build_parser().parse_args(argv)
        assert check_methods(args.methods) == list(example["METHODS"])
        paper = {"harmodt-f", "harmodt-m", "harmodt-r", "mtdt", "prompt-dt"}
        assert set(example["METHODS"]) >= paper
        assert args.steps == example["STEPS"] and args.threads == 1
        # the size options are valid for the selected methods (fails before training)
        overrides = benchmark.parse_overrides(args.set, check_methods(args.methods))
        assert overrides["harmodt-f"]["embed_size"] == 64
        assert overrides["harmodt-f"]["protect_1d"] is False  # as the matrix ran
        assert overrides["mtdt-d3rlpy"]["hidden_units"] == [64]
        assert "embed_size" not in overrides.get("mtbc", {})
        datasets.add(parse_dataset(args.datasets).dataset_id)
    assert datasets == {
        f"metaworld-v3/{suite}/{quality}-v0"
        for suite in ("mt5", "mt10")
        for quality in ("near-optimal", "sub-optimal")
    }


def test_the_lever_study_commands_are_valid() -> None:
    # no sys.path entry for examples/: the study imports no other example
    levers = runpy.run_path(str(ROOT / "examples" / "benchmark_levers.py"))
    lines = levers["commands"]()
    assert len(lines) == len(levers["VARIANTS"])
    outs = set()
    for line, options in zip(lines, levers["VARIANTS"].values(), strict=True):
        args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
        methods = check_methods(args.methods)
        overrides = benchmark.parse_overrides(args.set, methods)["harmodt-f"]
        for option in options:  # each variant sets what it says, at the matrix size
            key, value = option.split("=", 1)
            assert overrides[key] == json.loads(value)
        assert overrides["embed_size"] == 64
        HarmoDTConfig.from_preset("harmodt-f", **overrides).validate()
        outs.add(args.out)
    assert len(outs) == len(lines)  # one results folder per variant


def test_harmodt_cells_record_how_far_the_masks_moved(
    matrix: Matrix, store: Path, tmp_path: Path
) -> None:
    # dense MTDT: masks never move and every task uses every weight
    dense = _load(matrix.cell("mtdt"))["masks"]
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
    cell = _load(cell_path(tmp_path, matrix.dataset_id, "harmodt-f", 0))
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


def test_the_harmony_study_commands_are_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    streams = study["commands"]()
    assert len(streams) == 2
    seen: set[tuple[str, int]] = set()
    for stream in streams:
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            methods = check_methods(args.methods)
            overrides = benchmark.parse_overrides(args.set, methods)
            assert args.steps == study["STEPS"] and args.threads == 1
            for method in methods:
                if method == "mtbc":
                    assert overrides["mtbc"]["batch_size"] == 256
                else:
                    assert overrides[method]["batch_size"] == 16
                    HarmoDTConfig.from_preset(method, **overrides[method]).validate()
                seen |= {(method, seed) for seed in args.seeds}
            assert (args.curve_every is not None) == (methods == ["mtdt"])
    assert seen == {(m, s) for m in study["METHODS"] for s in study["SEEDS"]}
    # the budget probe: the same sizes at twice the steps, with curves
    probe: set[tuple[str, int]] = set()
    for stream in study["longer_commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            assert args.steps == study["LONGER_STEPS"] == 2 * study["STEPS"]
            assert args.curve_every is not None and args.out == study["LONGER_RESULTS"]
            probe |= {(args.methods, seed) for seed in args.seeds}
    assert probe == {
        (m, s) for m in study["LONGER_METHODS"] for s in study["LONGER_SEEDS"]
    }
    # the lever cells: each preset with its settings changed, in its own folder
    levers: set[tuple[str, int]] = set()
    for stream in study["lever_commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            (method,) = check_methods(args.methods)
            name = args.out.rsplit("/", 1)[-1]
            _, preset, extra = study["LEVERS"][name]
            overrides = benchmark.parse_overrides(args.set, [method])[method]
            assert method == preset and args.steps == study["STEPS"]
            assert overrides == {**overrides, **extra, "batch_size": 16}
            HarmoDTConfig.from_preset(method, **overrides).validate()
            levers |= {(name, seed) for seed in args.seeds}
    assert levers == {(n, s) for n in study["LEVERS"] for s in study["SEEDS"]}


def test_the_harmony_study_lever_table_pairs_each_lever(tmp_path: Path) -> None:
    """A lever's row pairs its cells seed by seed against the study's cells,
    read from the two folders the commands write to."""
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    slug = study["DATASET_SLUG"]

    def write(folder: Path, method: str, successes: dict[int, float]) -> None:
        (folder / slug / method).mkdir(parents=True)
        for seed, success in successes.items():
            cell = {"seed": seed, "label": method, "success_mean": success}
            cell |= {"return_mean": 1000 * success, "train_time_s": 90.0}
            cell |= {"eval_time_s": 30.0}
            (folder / slug / method / f"seed{seed}.json").write_text(json.dumps(cell))

    results, levers = tmp_path / "study", tmp_path / "levers"
    write(results, "harmodt-plus-v0", {0: 0.50, 1: 0.60, 2: 0.70})
    write(results, "mtdt", {0: 0.40, 1: 0.40, 2: 0.40})
    name, (label, preset, _) = next(iter(study["LEVERS"].items()))
    write(levers / name, preset, {0: 0.55, 1: 0.65, 2: 0.70})
    text = study["lever_table"](results, levers)
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1:4] == ["3", "63.3 ± 7.6", "55.0, 65.0, 70.0"]
    by_ref = dict(zip(study["LEVER_REFERENCES"], cols[5:], strict=True))
    assert by_ref["harmodt-plus-v0"].startswith("+3.3 [")  # (5 + 5 + 0) / 3
    assert by_ref["mtdt"].startswith("+23.3 [")
    assert by_ref["sparse-static"] == "—"  # no cells, no interval
    assert "(3 cells, 0.10 CPU-h)" in text
    assert study["lever_table"](results, tmp_path / "none") == ""


def test_the_harmony_study_states_its_evaluation_noise() -> None:
    """The binomial standard error of a cell's mean success over tasks, and
    of a paired difference, at the goals run and at 50."""
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    half = {"budget": {"eval_episodes": 20}, "success": {"a": 0.5, "b": 0.5}}
    solved = {"budget": {"eval_episodes": 20}, "success": {"a": 1.0, "b": 0.0}}
    text = study["_evaluation_noise"]([half, solved])
    # half: 100 * sqrt(2 * 0.25 / 20) / 2 = 7.91; solved: 0; mean 3.95
    assert "mean success 3.95 points (range 0.00-7.91)" in text
    assert "paired difference 5.59; with 50 goals per task 3.54." in text


# -------------------------------------------------- resuming a stopped cell

#: HarmoDT-F rewiring every 2 steps: mask updates on both sides of a stop
RESUMABLE = {
    **OVERRIDES["mtdt"],
    "mask_interval": 2,
    "change_fraction": 0.5,
    "change_schedule": "constant",
}
#: what a resumed cell may differ in: wall-clock times, and the record of it
WALL_CLOCK = {"train_time_s", "eval_time_s", "elapsed_s", "time_s", "started_at"}
WALL_CLOCK |= {"finished_at", "resumed_from"}


def _resumable_args(dataset_id: str, out: Path, steps: int = 8) -> list[str]:
    """``run`` of one HarmoDT-F cell: 8 steps, a curve point at step 4, a
    checkpoint every 2 steps, one thread (same floats in every process)."""
    args = ["run", "--methods", "harmodt-f", "--datasets", dataset_id]
    args += ["--steps", str(steps), "--eval-episodes", "1", "--eval-max-steps", "20"]
    args += ["--curve-every", "4", "--checkpoint-every", "2", "--threads", "1"]
    args += ["--out", str(out)]
    return args + [f"--set=harmodt-f.{k}={json.dumps(v)}" for k, v in RESUMABLE.items()]


def _comparable(value: Any) -> Any:
    """A cell without its wall-clock fields (``time_*`` metrics included)."""
    if isinstance(value, dict):
        return {
            k: _comparable(v)
            for k, v in value.items()
            if k not in WALL_CLOCK and not k.startswith("time_")
        }
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _assert_same_cell(resumed: dict[str, Any], straight: dict[str, Any]) -> None:
    assert set(resumed) == set(straight)
    assert set(resumed["final_metrics"]) == set(straight["final_metrics"])
    mine, theirs = _comparable(resumed), _comparable(straight)
    for key in ("success", "return", "final_metrics", "masks", "curve"):
        assert mine[key] == theirs[key], key
    assert mine == theirs


@dataclass
class Cell:
    """One HarmoDT-F cell's paths, and what its ``run`` returned and said."""

    args: list[str]
    path: Path
    checkpoints: Path
    code: int = 0
    err: str = ""


def _cell(dataset_id: str, out: Path, steps: int = 8) -> Cell:
    return Cell(
        _resumable_args(dataset_id, out, steps),
        cell_path(out, dataset_id, "harmodt-f", 0),
        checkpoint_dir(out, dataset_id, "harmodt-f", 0),
    )


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """``--threads 1`` sets torch's threads for the process: restore them."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(
    matrix: Matrix, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The uninterrupted cell (it checkpointed as it went)."""
    import torch

    threads = torch.get_num_threads()
    cell = _cell(matrix.dataset_id, tmp_path_factory.mktemp("straight"))
    saved: list[int] = []
    original = CellCheckpoints.save

    def spy(self: CellCheckpoints, algo: Any, *args: Any, **kwargs: Any) -> Path:
        saved.append(algo.grad_step)
        return original(self, algo, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(matrix.store))
        mp.setattr(CellCheckpoints, "save", spy)
        assert benchmark.main(cell.args) == 0
    torch.set_num_threads(threads)
    assert saved == [2, 4, 6, 8]  # periodic, then the finished fit's
    assert not cell.checkpoints.exists()
    return _load(cell.path)


@pytest.fixture
def stopped(
    matrix: Matrix,
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    torch_threads: None,
) -> Cell:
    """The cell sent SIGTERM while it evaluates its curve point at step 4: it
    finishes step 5, checkpoints and exits 143."""
    cell = _cell(matrix.dataset_id, tmp_path / "results")
    original = CellCheckpoints.save_curve

    def signal_after(self: CellCheckpoints, curve: list[dict[str, float]]) -> None:
        original(self, curve)
        signal.raise_signal(signal.SIGTERM)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CellCheckpoints, "save_curve", signal_after)
        cell.code = benchmark.main(cell.args)
    cell.err = capsys.readouterr().err
    return cell


def test_a_stopped_harmodt_cell_resumes_to_the_uninterrupted_result(
    stopped: Cell, straight: dict[str, Any]
) -> None:
    assert stopped.code == 143
    (line,) = stopped.err.strip().splitlines()
    assert "stopped after step 5 (checkpoint written)" in line
    assert "partial cell are kept, rerun the same command to resume" in line
    assert not stopped.path.exists()
    assert sorted(p.name for p in stopped.checkpoints.iterdir()) == [
        "curve.json",
        "settings.json",
        "step-4.json",
        "step-4.pt",
        "step-5.json",
        "step-5.pt",
    ]
    curve = json.loads((stopped.checkpoints / "curve.json").read_text())["curve"]
    assert [p["step"] for p in curve] == [4]

    assert benchmark.main(stopped.args) == 0
    resumed = _load(stopped.path)
    assert resumed["resumed_from"] == [5] and straight["resumed_from"] == []
    assert [p["step"] for p in resumed["curve"]] == [4, 8]
    assert resumed["masks"]["turnover_mean"] > 0  # the masks moved
    assert resumed["final_metrics"]["mask_changed"] > 0  # updates at 6 and 8
    _assert_same_cell(resumed, straight)
    assert not stopped.checkpoints.exists()


def test_a_cell_stopped_after_its_fit_only_evaluates_on_resume(
    matrix: Matrix,
    store: Path,
    tmp_path: Path,
    straight: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    torch_threads: None,
) -> None:
    cell = _cell(matrix.dataset_id, tmp_path / "results")
    original = CellCheckpoints.save

    def signal_at_the_end(
        self: CellCheckpoints, algo: Any, *args: Any, **kwargs: Any
    ) -> Path:
        path = original(self, algo, *args, **kwargs)
        if kwargs.get("fit") is not None:  # the finished fit's checkpoint
            signal.raise_signal(signal.SIGINT)
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CellCheckpoints, "save", signal_at_the_end)
        assert benchmark.main(cell.args) == 130
    assert "stopped after step 8" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HarmoDT, "fit", None)  # no training left to do
        assert benchmark.main(cell.args) == 0
    resumed = _load(cell.path)
    assert resumed["resumed_from"] == [8]
    _assert_same_cell(resumed, straight)


def test_finished_cells_leave_no_checkpoints(matrix: Matrix) -> None:
    # the default --checkpoint-every (1000) still checkpoints the end of a
    # HarmoDT fit; baselines never checkpoint
    assert not list(matrix.out.rglob("*.checkpoints"))
    assert not list(matrix.out.rglob("step-*"))
    for method in ("mtdt", "mtbc"):
        assert _load(matrix.cell(method))["resumed_from"] == []


def test_an_unreadable_newest_checkpoint_falls_back_to_the_older_one(
    stopped: Cell, straight: dict[str, Any]
) -> None:
    newest = stopped.checkpoints / "step-5.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    # and the curve file lost too: step 4's point is evaluated again
    (stopped.checkpoints / "curve.json").unlink()
    assert benchmark.main(stopped.args) == 0
    resumed = _load(stopped.path)
    assert resumed["resumed_from"] == [4]
    _assert_same_cell(resumed, straight)


def test_checkpoints_of_another_budget_are_refused_in_one_line(
    stopped: Cell, matrix: Matrix, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _cell(matrix.dataset_id, stopped.path.parents[2], steps=10)
    assert other.checkpoints == stopped.checkpoints
    assert benchmark.main(other.args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "checkpointed with a different budget" in line
    assert str(stopped.checkpoints) in line and "--overwrite" in line
    assert (stopped.checkpoints / "step-5.pt").exists()
    assert not stopped.path.exists()


def test_sigterm_stops_a_cell_process_and_a_rerun_resumes_it(
    matrix: Matrix,
    store: Path,
    tmp_path: Path,
    straight: dict[str, Any],
    torch_threads: None,
) -> None:
    cell = _cell(matrix.dataset_id, tmp_path / "results")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(store)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harmodt_algo.benchmark", *cell.args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(cell.checkpoints.glob("step-*.pt")):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the cell finished before the signal arrived")
    assert proc.returncode == 143, err
    assert "rerun" in err.strip().splitlines()[-1]
    assert not cell.path.exists() and list(cell.checkpoints.glob("step-*.pt"))

    assert benchmark.main(cell.args) == 0
    resumed = _load(cell.path)
    (step,) = resumed["resumed_from"]
    assert 2 <= step <= 8
    _assert_same_cell(resumed, straight)


# ----------------------------------------------------------------- bad input


def test_unknown_method_lists_the_valid_ones(
    minari_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BenchmarkError) as info:
        check_methods("mtbc,mtsac")
    message = str(info.value)
    assert "'mtsac'" in message
    for name in ("harmodt-f", "prompt-dt", "mtiql", "mtdt-d3rlpy", "mttd3bc"):
        assert name in message
    assert check_methods("MTBC, mtdt,mtbc") == ["mtbc", "mtdt"]
    from harmodt_algo import PRESETS
    from harmodt_algo.baselines import BASELINES

    assert len(check_methods("all")) == len(benchmark.METHODS)
    assert set(benchmark.METHODS) == set(PRESETS) | set(BASELINES)

    code = benchmark.main(
        ["run", "--methods", "mtsac", "--datasets", "MT5:expert", "--steps", "1"]
    )
    assert code == 2
    assert "valid methods" in capsys.readouterr().err


def test_unknown_dataset_says_how_to_build_it(
    minari_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(BenchmarkError) as info:
        run_matrix(
            "mtbc",
            ["metaworld-v3/mt5/near-optimal-v0"],
            [0],
            tmp_path,
            SETTINGS,
            log=lambda _: None,
        )
    message = str(info.value)
    assert "no local dataset 'metaworld-v3/mt5/near-optimal-v0'" in message
    assert "harmodt-recipes metaworld --suite MT5 --quality near-optimal" in message
    assert "--build-missing" in message
    assert not list(tmp_path.rglob("*.json"))

    with pytest.raises(BenchmarkError, match="MT5:near-optimal"):
        run_matrix("mtbc", ["someone/else-v0"], [0], tmp_path, SETTINGS)
    with pytest.raises(BenchmarkError, match="SUITE:quality"):
        parse_dataset("mt5-near")
    with pytest.raises(BenchmarkError, match="quality"):
        parse_dataset("MT5:great")


def test_replay_data_is_never_built_by_the_harness(
    minari_path: Path, tmp_path: Path
) -> None:
    spec = parse_dataset("MT5:sub-optimal-replay")
    assert spec.dataset_id == "metaworld-v3/mt5/sub-optimal-replay-v0"
    assert spec.replay and not spec.buildable
    assert parse_dataset(spec.dataset_id).replay
    with pytest.raises(BenchmarkError) as info:
        run_matrix("mtbc", [spec], [0], tmp_path, SETTINGS, build_missing=True)
    message = str(info.value)
    assert "does not build it" in message
    assert "--suite MT5 --quality replay --env-steps-per-task N" in message
    assert not list(tmp_path.rglob("*.json"))


def test_seeds_out_of_range_fail_before_any_work(
    minari_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = "99999999999999999999"
    code = benchmark.main(
        ["run", "--methods", "mtdt", "--datasets", "MT5:expert", "--seeds", huge]
        + ["--steps", "1", "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "seeds must be in [0, 4294967295]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="seed must be in"):
        HarmoDTConfig(seed=2**32, task_names=["a"]).validate()


def test_bad_options_fail_before_any_work(minari_path: Path, tmp_path: Path) -> None:
    bad = BenchmarkSettings(steps=1, overrides={"mtbc": {"embed_size": 3}})
    with pytest.raises(BenchmarkError, match="mtbc: bad option.*batch_size"):
        run_matrix("mtbc", ["MT5:expert"], [0], tmp_path / "out", bad)
    reserved = BenchmarkSettings(steps=1, overrides={"mtdt": {"seed": 3}})
    with pytest.raises(BenchmarkError, match="--seeds"):
        reserved.validate()
    with pytest.raises(BenchmarkError, match="steps must be a positive int"):
        BenchmarkSettings(steps=0).validate()
    with pytest.raises(BenchmarkError, match="cpu, cuda or cuda:N"):
        BenchmarkSettings(steps=1, device="tpu").validate()
    with pytest.raises(BenchmarkError, match="no selected method has"):
        benchmark.parse_overrides(["embed_size=3"], ["mtbc"])
    assert benchmark.parse_overrides(["batch_size=3"], ["mtbc", "mtdt"]) == {
        "mtbc": {"batch_size": 3},
        "mtdt": {"batch_size": 3},
    }
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("embed_size=abc", "expected int"),
        ("embed_size=32.0", "expected int"),
        ("compile_graph=maybe", "expected true or false"),
        ("mtbc.hidden_units=[64", "expected a JSON value"),
    ],
)
def test_set_values_are_typed_like_the_option(item: str, needle: str) -> None:
    with pytest.raises(BenchmarkError, match=needle):
        benchmark.parse_overrides([item], ["mtdt", "mtbc"])


def test_set_values_use_the_one_shared_parser() -> None:
    overrides = benchmark.parse_overrides(
        [
            "compile_graph=no",
            "embed_size=32",
            'mtdt.task_schedule="mixed"',
            "mtdt.harmony_gamma=2",
            "mtbc.hidden_units=[64, 64]",
        ],
        ["mtdt", "mtbc"],
    )
    assert overrides["mtdt"]["compile_graph"] is False
    assert overrides["mtdt"]["embed_size"] == 32
    assert overrides["mtdt"]["task_schedule"] == "mixed"
    assert overrides["mtdt"]["harmony_gamma"] == 2.0
    assert isinstance(overrides["mtdt"]["harmony_gamma"], float)
    assert overrides["mtbc"]["hidden_units"] == [64, 64]


@pytest.mark.parametrize("device", ["nonsense", "gpu", "mps", "cuda", "cuda:1"])
def test_bad_devices_are_one_line(device: str) -> None:
    with pytest.raises(BenchmarkError, match="--device") as info:
        BenchmarkSettings(steps=1, device=device).validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["mtdt,", "mtdt,,mtbc", " ,mtdt"])
def test_a_stray_comma_is_an_error(text: str) -> None:
    with pytest.raises(BenchmarkError, match="empty item"):
        check_methods(text)


def test_a_cell_has_one_writer(matrix: Matrix, store: Path, tmp_path: Path) -> None:
    """A cell another process holds is refused before any work, naming the
    holder; a cell finished meanwhile is not recomputed."""
    import os

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
