"""``plot_run`` on the logs of a real tiny ``harmodt train`` run.

The run (``tiny_run``, shared with cli/test_commands.py) has d3rlpy's real
CSVs: loss and per-task loss, per-task and mean success from the evaluator,
plus files that are not metrics (``*_grad.csv`` with a header, ``params.json``).
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import pytest

from harmodt_algo import plots
from harmodt_algo.plots import PlotsUnavailable, plot_run, read_metrics

from ..conftest import TINY_TASKS
from .cli.test_commands import TinyRun, tiny_run  # noqa: F401  (session fixture)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_run_writes_both_figures(tiny_run: TinyRun, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "figures"
    paths = plot_run(tiny_run.run_dir, out)
    assert [p.name for p in paths] == ["learning_curve.png", "task_success.png"]
    for path in paths:
        assert path.parent == out
        width, height = png_size(path)
        assert width > 300 and height > 150
    # two panels (loss and success) make the learning curve taller than wide/2
    curve_w, curve_h = png_size(out / "learning_curve.png")
    assert curve_h > curve_w / 2


def test_read_metrics_keeps_only_metric_csvs(tiny_run: TinyRun) -> None:  # noqa: F811
    metrics = read_metrics(tiny_run.run_dir)
    assert not [name for name in metrics if name.endswith("_grad")]
    assert (tiny_run.run_dir / "transformer.predict_action.weight_grad.csv").exists()
    assert metrics["loss"].steps == (2, 4)
    assert metrics["loss"].epochs == (1, 2)
    for task in TINY_TASKS:
        assert f"loss_{task}" in metrics and f"success_{task}" in metrics
    assert "success_mean" in metrics


def test_plot_run_without_evaluation_draws_the_learning_curve_only(
    tiny_run: TinyRun,  # noqa: F811
    tmp_path: Path,
) -> None:
    for path in tiny_run.run_dir.glob("loss*.csv"):
        shutil.copy(path, tmp_path / path.name)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["learning_curve.png"]
    png_size(paths[0])
    assert not (tmp_path / "task_success.png").exists()


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run directory"):
        plot_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="no d3rlpy metric CSVs"):
        plot_run(tmp_path)
    (tmp_path / "time_step.csv").write_text("1,2,0.5\n")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_run(tmp_path)


def test_missing_matplotlib_names_the_extra(
    tiny_run: TinyRun,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlotsUnavailable, match=r"pip install 'harmodt\[plots\]'"):
        plot_run(tiny_run.run_dir, tmp_path)
    assert not list(tmp_path.iterdir())


def test_module_entry_point(
    tiny_run: TinyRun,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plots.main([str(tiny_run.run_dir), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(tmp_path / "learning_curve.png"),
        str(tmp_path / "task_success.png"),
    ]
    assert plots.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
