"""Figures of a training run, drawn from d3rlpy's CSV logs.

Why from the CSVs: d3rlpy's ``FileAdapter`` already writes one file per metric
(``<logdir>/<metric>.csv``, rows ``epoch,step,value``), so the figures need
nothing but the run directory: they can be redrawn for any past run, on any
machine, without the model or the dataset. ``harmodt train`` calls
:func:`plot_run` at the end; ``python -m harmodt_algo.plots <logdir>`` redraws.

Figures:

* ``learning_curve.png``: the training loss against the step (and each task's
  loss, ``loss_<task>.csv``, when logged), plus the mean evaluation success
  (``success_mean.csv``) in a second panel when the run was evaluated;
* ``task_success.png``: each task's success rate at the last evaluation
  (``success_<task>.csv``).

matplotlib is an optional dependency (the ``plots`` extra); it is imported
lazily, through its Agg canvas (files only, no display, no pyplot global state).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PlotsUnavailable", "MetricSeries", "read_metrics", "plot_run", "main"]

#: Prefixes of per-task metrics written by HarmoDT / the multi-task evaluator.
TASK_LOSS_PREFIX = "loss_"
TASK_SUCCESS_PREFIX = "success_"
MEAN_SUCCESS = "success_mean"
INSTALL_HINT = "pip install 'harmodt[plots]'"


class PlotsUnavailable(ImportError):
    """matplotlib is not installed (it is the optional ``plots`` extra)."""


@dataclass(frozen=True)
class MetricSeries:
    """One d3rlpy metric: the value logged at the end of each epoch."""

    name: str
    epochs: tuple[int, ...]
    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def last(self) -> float:
        return self.values[-1]


def _read_csv(path: Path) -> MetricSeries | None:
    """A d3rlpy metric CSV (``epoch,step,value`` rows, no header), else None.

    Other CSVs in a run directory (``*_grad.csv`` has a header and 6 columns)
    are not metrics and are skipped.
    """
    epochs: list[int] = []
    steps: list[int] = []
    values: list[float] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) != 3:
            return None
        try:
            epoch, step, value = int(parts[0]), int(parts[1]), float(parts[2])
        except ValueError:
            return None
        epochs.append(epoch)
        steps.append(step)
        values.append(value)
    if not values:
        return None
    return MetricSeries(path.stem, tuple(epochs), tuple(steps), tuple(values))


def read_metrics(logdir: str | Path) -> dict[str, MetricSeries]:
    """Every metric CSV of a d3rlpy run directory, by metric name.

    Raises:
        FileNotFoundError: ``logdir`` is not a directory.
        ValueError: it holds no d3rlpy metric CSV.
    """
    root = Path(logdir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run directory {str(root)!r}")
    metrics = {}
    for path in sorted(root.glob("*.csv")):
        series = _read_csv(path)
        if series is not None:
            metrics[series.name] = series
    if not metrics:
        raise ValueError(
            f"no d3rlpy metric CSVs (<metric>.csv with epoch,step,value rows) in "
            f"{str(root)!r}; was the run logged with the file logger?"
        )
    return metrics


def _task_order(logdir: Path) -> list[str]:
    """The model's task order from d3rlpy's ``params.json`` (the saved config),
    so figures list tasks as the results table does; empty if unknown."""
    try:
        params = json.loads((logdir / "params.json").read_text(encoding="utf-8"))
        names = params["config"]["params"]["task_names"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _ordered(series: dict[str, MetricSeries], order: Sequence[str]) -> list[str]:
    known = [t for t in order if t in series]
    return known + sorted(t for t in series if t not in known)


@dataclass(frozen=True)
class _Mpl:
    """The few matplotlib pieces the figures use, imported on demand."""

    figure: Any  # (**kwargs) -> Figure on an Agg canvas
    integer_locator: Any  # () -> a tick locator at integers


def _matplotlib() -> _Mpl:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise PlotsUnavailable(f"plots need matplotlib: {INSTALL_HINT}") from exc

    def figure(**kwargs: Any) -> Any:
        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)  # attach the Agg canvas: files only, no display
        return fig

    return _Mpl(figure=figure, integer_locator=lambda: MaxNLocator(integer=True))


def _task_series(
    metrics: dict[str, MetricSeries], prefix: str, exclude: Sequence[str] = ()
) -> dict[str, MetricSeries]:
    """Per-task series ``<prefix><task>`` -> ``{task: series}``."""
    return {
        name[len(prefix) :]: series
        for name, series in metrics.items()
        if name.startswith(prefix) and name not in exclude and len(name) > len(prefix)
    }


def _plot_learning_curve(
    mpl: _Mpl,
    metrics: dict[str, MetricSeries],
    order: Sequence[str],
    title: str,
    path: Path,
) -> bool:
    loss = metrics.get("loss")
    task_losses = _task_series(metrics, TASK_LOSS_PREFIX)
    success = metrics.get(MEAN_SUCCESS)
    if loss is None and not task_losses and success is None:
        return False
    panels = int(loss is not None or bool(task_losses)) + int(success is not None)
    fig = mpl.figure(figsize=(7.0, 3.2 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    index = 0
    if loss is not None or task_losses:
        ax = axes[index]
        index += 1
        for task in _ordered(task_losses, order):
            series = task_losses[task]
            ax.plot(series.steps, series.values, lw=1.0, alpha=0.6, label=task)
        if loss is not None:
            ax.plot(
                loss.steps,
                loss.values,
                lw=2.0,
                color="black",
                marker="o" if len(loss.values) <= 30 else None,
                label="loss (all tasks)",
            )
        ax.set_ylabel("training loss (epoch mean)")
        ax.grid(alpha=0.3)
        if task_losses:
            ax.legend(fontsize="small", ncol=2 if len(task_losses) > 5 else 1)
    if success is not None:
        ax = axes[index]
        ax.plot(success.steps, [100 * v for v in success.values], marker="o", lw=2.0)
        ax.set_ylabel("success % (mean over tasks)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("gradient step")
    axes[-1].xaxis.set_major_locator(mpl.integer_locator())
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return True


def _plot_task_success(
    mpl: _Mpl,
    metrics: dict[str, MetricSeries],
    order: Sequence[str],
    title: str,
    path: Path,
) -> bool:
    per_task = _task_series(metrics, TASK_SUCCESS_PREFIX, exclude=[MEAN_SUCCESS])
    if not per_task:
        return False
    tasks = _ordered(per_task, order)
    values = [100 * per_task[t].last for t in tasks]
    step = max(per_task[t].steps[-1] for t in tasks)
    height = max(2.5, 0.3 * len(tasks) + 1.2)
    fig = mpl.figure(figsize=(7.0, height), layout="constrained")
    ax = fig.subplots()
    positions = list(range(len(tasks)))
    bars = ax.barh(positions, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], padding=3)
    ax.set_yticks(positions, tasks, fontsize="small")
    ax.invert_yaxis()  # first task on top, as in the results table
    ax.set_xlim(0, 112)  # room for the "100%" label
    ax.set_xticks([0, 20, 40, 60, 80, 100])
    ax.set_xlabel(f"success % (last evaluation, step {step})")
    mean = metrics.get(MEAN_SUCCESS)
    if mean is not None and not math.isnan(mean.last):
        ax.axvline(
            100 * mean.last,
            color="black",
            ls="--",
            lw=1.0,
            label=f"mean {100 * mean.last:.0f}%",
        )
        ax.legend(fontsize="small", loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return True


def plot_run(logdir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw a run's figures from its d3rlpy CSV logs; returns the PNG paths.

    Args:
        logdir: the run directory (``<root>/<experiment>_<timestamp>``).
        out_dir: where to write the PNGs (default: ``logdir``).

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        ValueError: no metric CSVs, or none of loss / success to draw.
        PlotsUnavailable: matplotlib is not installed.
    """
    metrics = read_metrics(logdir)
    mpl = _matplotlib()
    order = _task_order(Path(logdir))
    out = Path(logdir) if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = Path(logdir).resolve().name
    written = []
    curve = out / "learning_curve.png"
    if _plot_learning_curve(mpl, metrics, order, title, curve):
        written.append(curve)
    bars = out / "task_success.png"
    if _plot_task_success(mpl, metrics, order, title, bars):
        written.append(bars)
    if not written:
        raise ValueError(
            f"nothing to plot in {str(logdir)!r}: no loss or success metrics among "
            f"{sorted(metrics)}"
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harmodt_algo.plots <logdir> [--out DIR]``; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m harmodt_algo.plots",
        description="Draw learning_curve.png and task_success.png from a run's "
        "d3rlpy CSV logs.",
        epilog="Examples:\n"
        "  python -m harmodt_algo.plots runs/harmodt-f_mt5_near-optimal_20250101\n"
        "  python -m harmodt_algo.plots runs/<run> --out figures/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("logdir", help="a run directory with d3rlpy CSV logs")
    parser.add_argument("--out", help="output directory (default: the run directory)")
    args = parser.parse_args(argv)
    try:
        paths = plot_run(args.logdir, args.out)
    except (OSError, ValueError, PlotsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
