"""Resuming a stopped cell: a HarmoDT-F cell stopped by a real SIGTERM (in
process and in a subprocess) resumes to the uninterrupted result;
checkpoints of another budget, unreadable checkpoints and finished cells.
"""

from __future__ import annotations

import json
import os
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
from harmodt_algo import HarmoDT, benchmark
from harmodt_algo.benchmark import (
    cell_path,
    checkpoint_dir,
)
from harmodt_algo.benchmark.resume import CellCheckpoints

from ._matrix import RESUMABLE, Matrix, comparable, load_json

# -------------------------------------------------- resuming a stopped cell


def _resumable_args(dataset_id: str, out: Path, steps: int = 8) -> list[str]:
    """``run`` of one HarmoDT-F cell: 8 steps, a curve point at step 4, a
    checkpoint every 2 steps, one thread (same floats in every process)."""
    args = ["run", "--methods", "harmodt-f", "--datasets", dataset_id]
    args += ["--steps", str(steps), "--eval-episodes", "1", "--eval-max-steps", "20"]
    args += ["--curve-every", "4", "--checkpoint-every", "2", "--threads", "1"]
    args += ["--out", str(out)]
    return args + [f"--set=harmodt-f.{k}={json.dumps(v)}" for k, v in RESUMABLE.items()]


def _assert_same_cell(resumed: dict[str, Any], straight: dict[str, Any]) -> None:
    assert set(resumed) == set(straight)
    assert set(resumed["final_metrics"]) == set(straight["final_metrics"])
    mine, theirs = comparable(resumed), comparable(straight)
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
    return load_json(cell.path)


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
    resumed = load_json(stopped.path)
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
    resumed = load_json(cell.path)
    assert resumed["resumed_from"] == [8]
    _assert_same_cell(resumed, straight)


def test_finished_cells_leave_no_checkpoints(matrix: Matrix) -> None:
    # the default --checkpoint-every (1000) still checkpoints the end of a
    # HarmoDT fit; baselines never checkpoint
    assert not list(matrix.out.rglob("*.checkpoints"))
    assert not list(matrix.out.rglob("step-*"))
    for method in ("mtdt", "mtbc"):
        assert load_json(matrix.cell(method))["resumed_from"] == []


def test_an_unreadable_newest_checkpoint_falls_back_to_the_older_one(
    stopped: Cell, straight: dict[str, Any]
) -> None:
    newest = stopped.checkpoints / "step-5.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    # and the curve file lost too: step 4's point is evaluated again
    (stopped.checkpoints / "curve.json").unlink()
    assert benchmark.main(stopped.args) == 0
    resumed = load_json(stopped.path)
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
    resumed = load_json(cell.path)
    (step,) = resumed["resumed_from"]
    assert 2 <= step <= 8
    _assert_same_cell(resumed, straight)
