"""A results folder as a report: a markdown table in the shape of the paper's
Table 1 (mean ± std over seeds of the mean success %, one column per suite x
quality, plus wall time), CSVs of every cell and every task, and PNG figures.
Cells run with a held-out dataset add the paper's seen/unseen table (method x
adaptation) and its per-task success, in the markdown and ``unseen.csv``.
Cells with a learning curve (``--curve-every``) add the protocols table: the
final checkpoint (Meta-World's protocol) beside the best of the curve's
evaluations (the HarmoDT release's) and the selection bias between them, in
the markdown and ``protocols.csv``.

It reads only the cell files, so a report can be made anywhere the results
were copied to, without the data or a model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import F64
from .cellsets import QUALITY_SHORT, Cell, Groups, load_cells
from .cellsets import Column as _Column
from .cellsets import columns as _columns
from .cellsets import first_cell as _first
from .cellsets import group_cells as _group
from .cellsets import label as _label
from .cellsets import method_order as _method_order
from .errors import BenchmarkError
from .methods import PAPER_TABLE1
from .protocols import ProtocolRow, best_point, curve_goals, protocol_rows
from .stats import MeanCI, format_paired
from .unseen import NO_ADD_TASK

__all__ = ["QUALITY_SHORT", "ProtocolRow", "load_cells", "protocol_rows", "report"]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population, ddof 0) standard deviation."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _fmt_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _task_success(group: Sequence[Cell], task: str) -> float:
    """Mean over seeds of one task's success (%), or of its return where the
    dataset has no success signal."""
    if _measure(group) == "return":
        return float(np.mean([float(c["return"].get(task, np.nan)) for c in group]))
    return 100 * float(np.mean([float(c["success"].get(task, np.nan)) for c in group]))


def _measure(group: Sequence[Cell]) -> str:
    """``success`` (Meta-World) or ``return`` (a dataset without a success
    signal: the MuJoCo recipes), as the cells' data facts say."""
    facts = [c.get("dataset") or {} for c in group]
    return "return" if any(f.get("measure") == "return" for f in facts) else "success"


def _score(cell: Cell) -> float:
    """A cell's number in the tables: success % or mean return over tasks."""
    if _measure([cell]) == "return":
        return float(cell["return_mean"])
    return 100 * float(cell["success_mean"])


def _table_head(first: str, labels: Sequence[str]) -> list[str]:
    """A markdown header row and its rule (numbers right-aligned)."""
    return [
        f"| {first} | " + " | ".join(labels) + " |",
        "|" + "|".join(["---", *["---:"] * len(labels)]) + "|",
    ]


# --------------------------------------------------------------------------- #
# Markdown
# --------------------------------------------------------------------------- #


def _intro(cells: Sequence[Cell]) -> list[str]:
    """The title and what the numbers are (budgets and devices as run)."""
    steps = sorted({int(c["budget"]["steps"]) for c in cells})
    episodes = sorted({int(c["budget"]["eval_episodes"]) for c in cells})
    devices = sorted({str(c.get("device", "?")) for c in cells})
    return [
        "# Benchmark results",
        "",
        "Mean success rate over tasks (%) of the **final** checkpoint, mean ± std "
        "(ddof 0) over training seeds; every method trained on the same data for "
        f"the same number of gradient steps ({', '.join(map(str, steps))}) and "
        f"evaluated by the same multi-task evaluator ({', '.join(map(str, episodes))} "
        "held-out goal(s) per task, the same goals for every method and seed). "
        f"Device: {', '.join(devices)}. `(n=k)` marks a cell with fewer seeds than "
        "its column's most. Time: mean wall time per cell, train + evaluation. "
        "A column marked *(return)* is a dataset without a success signal (the "
        "MuJoCo recipes): its numbers are the mean return over tasks.",
        "",
    ]


def _mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (ddof 0) over seeds, the mean alone for one seed."""
    mean, std = _stats(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {std:.1f}"


def _success_entry(group: Sequence[Cell], most: int) -> str:
    """One method on one dataset: mean ± std over seeds, ``(n=k)`` if short."""
    text = _mean_std([_score(c) for c in group])
    if len(group) < most:
        text += f" (n={len(group)})"
    return text


def _time_entry(groups: Sequence[Sequence[Cell]]) -> str:
    """Mean wall time per cell, train + evaluation."""
    times_train = [float(c["train_time_s"]) for g in groups for c in g]
    times_eval = [float(c["eval_time_s"]) for g in groups for c in g]
    if not times_train:
        return "—"
    train, evaluation = float(np.mean(times_train)), float(np.mean(times_eval))
    return (
        f"{_fmt_time(train + evaluation)} ({_fmt_time(train)} + "
        f"{_fmt_time(evaluation)})"
    )


def _success_table(
    groups: Groups, columns: Sequence[_Column], methods: Sequence[str]
) -> list[str]:
    """The Table-1-shaped table: one row per method, one column per dataset."""
    marked = [
        f"{c.label} *(return)*"
        if any(
            _measure(g) == "return" for (d, _), g in groups.items() if d == c.dataset_id
        )
        else c.label
        for c in columns
    ]
    labels = [*marked, "time / cell (train + eval)"]
    lines = _table_head("method", labels)
    most = {
        c.dataset_id: max(
            (len(groups.get((c.dataset_id, m), [])) for m in methods), default=0
        )
        for c in columns
    }
    for method in methods:
        row = [_label(method)]
        ran = []
        for column in columns:
            group = groups.get((column.dataset_id, method), [])
            row.append(_success_entry(group, most[column.dataset_id]) if group else "—")
            ran.append(group)
        row.append(_time_entry(ran))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _md_table(
    header: Sequence[str], align: str, rows: Iterable[Sequence[Any]]
) -> list[str]:
    """A markdown table: ``align`` has one letter per column, ``l`` (text)
    or ``r`` (numbers)."""
    rule = "".join("---|" if a == "l" else "---:|" for a in align)
    return [
        "| " + " | ".join(header) + " |",
        "|" + rule,
        *("| " + " | ".join(str(v) for v in row) + " |" for row in rows),
    ]


def _data_table(cells: Sequence[Cell], columns: Sequence[_Column]) -> list[str]:
    """Per dataset: its size and the seeds that ran on it."""
    rows = []
    for column in columns:
        group = [c for c in cells if c["dataset_id"] == column.dataset_id]
        facts = group[0].get("dataset") or {}
        seeds = sorted({int(c["seed"]) for c in group})
        rows.append(
            (
                f"`{column.dataset_id}`",
                len(facts.get("tasks") or []),
                facts.get("episodes_per_task", "?"),
                facts.get("transitions", "?"),
                ", ".join(map(str, seeds)),
            )
        )
    header = ("dataset", "tasks", "episodes / task", "transitions", "seeds")
    return ["", "## Seeds and data", "", *_md_table(header, "lrrrl", rows)]


def _parameter_table(cells: Sequence[Cell], methods: Sequence[str]) -> list[str]:
    """Per method: its size (total and active per task) and batch size."""
    rows = []
    for method in methods:
        group = [c for c in cells if c["method"] == method]
        params = sorted({int(c["param_count"]) for c in group})
        active = [
            float(a) for c in group if (a := c.get("active_param_count")) is not None
        ]
        batches = sorted({int(c["batch_size"]) for c in group})
        rows.append(
            (
                _label(method),
                " / ".join(f"{p:,}" for p in params),
                f"{np.mean(active):,.0f}" if active else "—",
                ", ".join(map(str, batches)),
            )
        )
    header = ("method", "parameters", "active per task", "batch size")
    return ["", "## Parameters", "", *_md_table(header, "lrrr", rows)]


def _task_table(
    cells: Sequence[Cell], groups: Groups, column: _Column, methods: Sequence[str]
) -> list[str]:
    """One dataset's per-task success, mean over seeds."""
    first = _first(cells, column.dataset_id)
    tasks = list((first.get("success") or {}).keys())
    what = "return" if _measure([first]) == "return" else "success (%)"
    lines = ["", f"## Per-task {what}: {column.label}", ""]
    lines += _table_head("method", tasks)
    for method in methods:
        group = groups.get((column.dataset_id, method), [])
        if not group:
            continue
        values = [f"{_task_success(group, t):.0f}" for t in tasks]
        lines.append(f"| {_label(method)} | " + " | ".join(values) + " |")
    return lines


def _paper_table(columns: Sequence[_Column], methods: Sequence[str]) -> list[str]:
    """The paper's numbers for the columns and methods that both have."""
    paper_cols = [
        c
        for c in columns
        if any((c.suite, c.quality) in v for v in PAPER_TABLE1.values())
    ]
    labels = [_label(m) for m in methods]
    paper_rows = [label for label in PAPER_TABLE1 if label in labels]
    if not (paper_cols and paper_rows):
        return []
    lines = [
        "",
        "## The paper's Table 1, same columns (reference only)",
        "",
        "Meta-World **v2** data from SAC replay buffers, best checkpoint: the "
        "absolute numbers are not comparable with the table above, only the "
        "gaps between methods are.",
        "",
        *_table_head("method", [c.label for c in paper_cols]),
    ]
    for label in paper_rows:
        values = [
            f"{PAPER_TABLE1[label][(str(c.suite), str(c.quality))]:.2f}"
            if (c.suite, c.quality) in PAPER_TABLE1[label]
            else "—"
            for c in paper_cols
        ]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


# --------------------------------------------------------------------------- #
# Protocols: the final checkpoint vs the release's best evaluation
# --------------------------------------------------------------------------- #


def _counts(values: Sequence[int]) -> str:
    """``50``, or ``20/50`` when seeds differ."""
    return "/".join(map(str, values))


def _bias_entry(bias: MeanCI | None) -> str:
    """``+4.9 [+1.0, +8.8] (n=3)``; one seed has no interval."""
    if bias is None:
        return "—"
    if bias.n < 2:
        return f"{bias.mean:+.1f} (n=1, no interval)"
    return format_paired(bias)


def _protocol_line(row: ProtocolRow, label: str) -> str:
    final = f"final, {_counts(row.final_goals)} goals/task"
    values = [label, _label(row.method), final, _mean_std(list(row.final.values()))]
    if row.best:
        values += [
            f"best of {_counts(row.evaluations)} evaluations, "
            f"{_counts(row.curve_goals)} goals/task",
            _mean_std(list(row.best.values())),
            _bias_entry(row.bias()),
        ]
    else:
        values += ["no curve", "—", "—"]
    return "| " + " | ".join(values) + " |"


def _protocol_section(cells: Sequence[Cell], columns: Sequence[_Column]) -> list[str]:
    """The protocols table; none when no cell has a curve."""
    if not any(c.get("curve") for c in cells):
        return []
    label_of = {c.dataset_id: c.label for c in columns}
    lines = [
        "",
        "## Protocols: final checkpoint (a) vs best evaluation (b)",
        "",
        "(a) is Meta-World's protocol, the table above: the final checkpoint on "
        "the final evaluation's held-out goals. (b) is the HarmoDT release's: "
        "the best mean success over tasks among the learning curve's "
        "evaluations (every `--curve-every` steps and at the last step, on the "
        "curve's goals: the first of the same draw of held-out goals), a "
        "maximum over noisy evaluations. b − a is the selection bias: the mean "
        "over seeds of each seed's difference, with its paired 95 % t-interval. "
        "(a) and (b): mean ± std (ddof 0) over seeds, success %. Cells "
        "without a curve (d3rlpy baselines, or run without `--curve-every`) "
        "have (a) only.",
        "",
        "| dataset | method | (a) protocol | (a) % | (b) protocol | (b) % "
        "| b − a (95 % CI) |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for row in protocol_rows(cells):
        lines.append(_protocol_line(row, label_of[row.dataset_id]))
    return lines


def _write_protocols_csv(cells: Sequence[Cell], out: Path) -> Path:
    """``protocols.csv``: one row per cell, both protocols' success (0-1)."""
    path = out / "protocols.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(
            ["dataset_id", "method", "seed", "final_success", "final_goals"]
            + ["best_success", "best_step", "evaluations", "curve_goals"]
        )
        for cell in cells:
            final = [cell["success_mean"], cell["budget"]["eval_episodes"]]
            curve = cell.get("curve")
            if curve:
                best = best_point(cell)
                extra = [best["success_mean"], best["step"], len(curve)]
                extra.append(curve_goals(cell))
            else:
                extra = [None] * 4
            rows.writerow(
                [cell["dataset_id"], cell["method"], cell["seed"], *final, *extra]
            )
    return path


# --------------------------------------------------------------------------- #
# Unseen tasks (cells run with --held-out)
# --------------------------------------------------------------------------- #

#: An unseen row: (method, adaptation, the cells with a result or a reason).
_UnseenRow = tuple[str, str, list[Cell]]


def _unseen_pairs(cells: Sequence[Cell]) -> list[tuple[str, str]]:
    """(training, held-out) dataset ids of the cells that have unseen records."""
    pairs = {(str(c["dataset_id"]), str(c["unseen"]["dataset_id"])) for c in cells}
    return sorted(pairs)


def _unseen_rows(cells: Sequence[Cell], methods: Sequence[str]) -> list[_UnseenRow]:
    """One row per method and adaptation (a d3rlpy baseline's row has no
    adaptation), in table order."""
    rows: list[_UnseenRow] = []
    for method in methods:
        group = sorted(
            (c for c in cells if c["method"] == method), key=lambda c: int(c["seed"])
        )
        names: dict[str, None] = {}
        for cell in group:
            names.update(dict.fromkeys(cell["unseen"]["adapt"]))
            names.update(dict.fromkeys(cell["unseen"]["not_applicable"]))
        rows += [(method, name, group) for name in names]
    return rows


def _adapted(group: Sequence[Cell], name: str) -> list[Mapping[str, Any]]:
    """The unseen results of adaptation ``name``, one per seed that ran it."""
    return [c["unseen"]["adapt"][name] for c in group if name in c["unseen"]["adapt"]]


def _why_not(group: Sequence[Cell], name: str) -> str | None:
    """Why adaptation ``name`` could not run (None: it ran)."""
    reasons = [c["unseen"]["not_applicable"].get(name) for c in group]
    return next((str(r) for r in reasons if r), None)


def _unseen_entry(group: Sequence[Cell], name: str) -> tuple[str, str]:
    """Mean ± std over seeds of the unseen success %, and the adaptation time;
    ``n/a`` where the adaptation cannot run."""
    results = _adapted(group, name)
    if not results:
        return "n/a", "—"
    by_return = _measure(group) == "return"
    text = _mean_std(
        [
            float(r["return_mean"]) if by_return else 100 * float(r["success_mean"])
            for r in results
        ]
    )
    if len(results) < len(group):
        text += f" (n={len(results)})"
    return text, _fmt_time(float(np.mean([r["adapt_time_s"] for r in results])))


def _unseen_intro(first: Cell, train_id: str, held_id: str) -> list[str]:
    """What the unseen numbers are, and the data's own success for reference."""
    unseen = first["unseen"]
    data = unseen.get("data_success") or {}
    ref = (
        f" The held-out data's own success on these tasks: "
        f"{100 * float(np.mean(list(data.values()))):.1f}%."
        if data
        else ""
    )
    given = first["budget"].get("target_return")
    target = "the best demonstration's" if given is None else f"{given:g}"
    return [
        "",
        f"## Unseen tasks: `{train_id}` → `{held_id}`",
        "",
        "Each trained model (the seen column: its score on the training tasks, "
        f"as above) gets the {len(unseen['tasks'])} held-out tasks from the first "
        f"{unseen['demos_per_task']} episode(s) of each (`add_task`, on a copy), "
        f"then the same evaluator scores them (target return: {target}). Mean "
        f"{'return' if _measure([first]) == 'return' else 'success %'} over the "
        "held-out tasks, mean ± std (ddof 0) "
        f"over seeds; time: adaptation, mean per cell.{ref}",
        "",
    ]


def _unseen_table(cells: Sequence[Cell], methods: Sequence[str]) -> list[str]:
    """The paper's seen/unseen columns for one (training, held-out) pair."""
    lines = [
        "| method | adaptation | seen | unseen | adaptation time |",
        "|---|---|---:|---:|---:|",
    ]
    reasons: list[str] = []
    for method, name, group in _unseen_rows(cells, methods):
        unseen, time_s = _unseen_entry(group, name)
        seen = _success_entry(group, len(group))
        shown = "—" if name == NO_ADD_TASK else name
        lines.append(f"| {_label(method)} | {shown} | {seen} | {unseen} | {time_s} |")
        why = _why_not(group, name)
        if why:  # a baseline's reason names it
            reasons.append(
                f"- {why}"
                if name == NO_ADD_TASK
                else f"- {_label(method)} {name}: {why}"
            )
    if reasons:
        lines += ["", "n/a (not applicable):", "", *reasons]
    return lines


def _unseen_task_table(cells: Sequence[Cell], methods: Sequence[str]) -> list[str]:
    """Per held-out task success (%) or return, mean over seeds."""
    tasks = list(cells[0]["unseen"]["tasks"])
    by_return = _measure(cells) == "return"
    key, scale = ("return", 1.0) if by_return else ("success", 100.0)
    what = "return" if by_return else "success (%)"
    lines = ["", f"### Per-task unseen {what}", ""]
    lines += [
        "| method | adaptation | " + " | ".join(tasks) + " |",
        "|---|---|" + "---:|" * len(tasks),
    ]
    for method, name, group in _unseen_rows(cells, methods):
        results = _adapted(group, name)
        if not results:
            continue
        values = [
            f"{scale * float(np.mean([r[key][t] for r in results])):.0f}" for t in tasks
        ]
        lines.append(f"| {_label(method)} | {name} | " + " | ".join(values) + " |")
    return lines


def _unseen_sections(cells: Sequence[Cell], methods: Sequence[str]) -> list[str]:
    """Every (training, held-out) pair's unseen tables; none without such cells."""
    held = [c for c in cells if c.get("unseen")]
    lines: list[str] = []
    for train_id, held_id in _unseen_pairs(held):
        pair = [
            c
            for c in held
            if c["dataset_id"] == train_id and c["unseen"]["dataset_id"] == held_id
        ]
        lines += _unseen_intro(pair[0], train_id, held_id)
        lines += _unseen_table(pair, methods)
        lines += _unseen_task_table(pair, methods)
    return lines


def _markdown(
    cells: Sequence[Cell], columns: Sequence[_Column], methods: Sequence[str]
) -> str:
    groups = _group(cells)
    lines = _intro(cells)
    lines += _success_table(groups, columns, methods)
    lines += _protocol_section(cells, columns)
    lines += _data_table(cells, columns)
    lines += _parameter_table(cells, methods)
    for column in columns:
        lines += _task_table(cells, groups, column, methods)
    lines += _unseen_sections(cells, methods)
    lines += _paper_table(columns, methods)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# CSVs
# --------------------------------------------------------------------------- #

_CELL_FIELDS = (
    "dataset_id",
    "column",
    "suite",
    "quality",
    "method",
    "label",
    "seed",
    "steps",
    "batch_size",
    "success_mean",
    "return_mean",
    "train_time_s",
    "eval_time_s",
    "param_count",
    "active_param_count",
    "eval_episodes",
    "episodes_per_task",
    "device",
    "finished_at",
    "path",
)


def _cell_row(cell: Cell, column: str) -> dict[str, Any]:
    """One row of ``cells.csv``."""
    facts = cell.get("dataset") or {}
    return {
        "dataset_id": cell["dataset_id"],
        "column": column,
        "suite": facts.get("suite"),
        "quality": facts.get("quality"),
        "method": cell["method"],
        "label": cell.get("label"),
        "seed": cell["seed"],
        "steps": cell["steps"],
        "batch_size": cell.get("batch_size"),
        "success_mean": cell["success_mean"],
        "return_mean": cell["return_mean"],
        "train_time_s": cell["train_time_s"],
        "eval_time_s": cell["eval_time_s"],
        "param_count": cell.get("param_count"),
        "active_param_count": cell.get("active_param_count"),
        "eval_episodes": cell["budget"]["eval_episodes"],
        "episodes_per_task": facts.get("episodes_per_task"),
        "device": cell.get("device"),
        "finished_at": cell.get("finished_at"),
        "path": cell.get("_path"),
    }


def _write_csvs(
    cells: Sequence[Cell], columns: Sequence[_Column], out: Path
) -> list[Path]:
    label_of = {c.dataset_id: c.label for c in columns}
    cells_csv = out / "cells.csv"
    tasks_csv = out / "tasks.csv"
    with cells_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_CELL_FIELDS))
        writer.writeheader()
        for cell in cells:
            writer.writerow(_cell_row(cell, label_of[str(cell["dataset_id"])]))
    with tasks_csv.open("w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(
            ["dataset_id", "method", "seed", "task", "success_rate", "mean_return"]
        )
        for cell in cells:
            for task, success in (cell.get("success") or {}).items():
                rows.writerow(
                    [
                        cell["dataset_id"],
                        cell["method"],
                        cell["seed"],
                        task,
                        success,
                        (cell.get("return") or {}).get(task),
                    ]
                )
    return [cells_csv, tasks_csv]


def _write_unseen_csv(cells: Sequence[Cell], out: Path) -> Path:
    """``unseen.csv``: one row per cell, adaptation and held-out task."""
    path = out / "unseen.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(
            ["dataset_id", "held_out_id", "method", "adaptation", "seed", "task"]
            + ["success_rate", "mean_return", "adapt_time_s"]
        )
        for cell in cells:
            unseen = cell.get("unseen") or {}
            for name, result in (unseen.get("adapt") or {}).items():
                for task, success in result["success"].items():
                    rows.writerow(
                        [cell["dataset_id"], unseen["dataset_id"], cell["method"]]
                        + [name, cell["seed"], task, success]
                        + [result["return"].get(task), result["adapt_time_s"]]
                    )
    return path


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on an Agg canvas (files only, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in [dev]
        raise BenchmarkError(
            "plots need matplotlib: pip install 'harmodt[plots]' (or pass --no-plots)"
        ) from exc
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _plot_bars(
    cells: Sequence[Cell],
    columns: Sequence[_Column],
    methods: Sequence[str],
    path: Path,
) -> Path:
    groups = _group(cells)
    width = 0.8 / max(len(methods), 1)
    fig = _figure(figsize=(max(6.0, 1.2 + 0.35 * len(methods) * len(columns)), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(columns))
    for i, method in enumerate(methods):
        means, stds = [], []
        for column in columns:
            group = groups.get((column.dataset_id, method), [])
            if group:
                mean, std = _stats([100 * float(c["success_mean"]) for c in group])
            else:
                mean, std = math.nan, 0.0
            means.append(mean)
            stds.append(std)
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            means,
            width,
            yerr=stds,
            capsize=2,
            label=_label(method),
        )
    ax.set_xticks(x)
    ax.set_xticklabels([c.label for c in columns])
    ax.set_ylabel("mean success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Final-checkpoint success, mean ± std over seeds")
    ax.legend(
        fontsize="small",
        ncols=min(len(methods), 5),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _annotate(ax: Any, grid: F64) -> None:
    """Write each heat-map entry on its square (light text on dark squares)."""
    rows, tasks = grid.shape
    for i in range(rows):
        for j in range(tasks):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    color="white" if grid[i, j] < 60 else "black",
                    fontsize="small",
                )


def _plot_heatmap(
    cells: Sequence[Cell],
    column: _Column,
    methods: Sequence[str],
    path: Path,
) -> Path:
    groups = _group(cells)
    tasks = list((_first(cells, column.dataset_id).get("success") or {}).keys())
    rows = [m for m in methods if (column.dataset_id, m) in groups]
    grid = np.full((len(rows), len(tasks)), np.nan)
    for i, method in enumerate(rows):
        group = groups[(column.dataset_id, method)]
        for j, task in enumerate(tasks):
            grid[i, j] = _task_success(group, task)
    longest = max((len(t) for t in tasks), default=10)
    fig = _figure(
        figsize=(
            max(6.0, 3.0 + 0.5 * len(tasks)),
            1.6 + 0.45 * len(rows) + 0.075 * longest,
        )
    )
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels(tasks, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([_label(m) for m in rows])
    if len(tasks) <= 15:
        _annotate(ax, grid)
    fig.colorbar(image, ax=ax, label="success (%)")
    ax.set_title(f"Per-task success (%), mean over seeds\n{column.label}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def report(results: str | Path, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``benchmark.md``, ``cells.csv``, ``tasks.csv`` (``unseen.csv``
    when cells were run with a held-out dataset, ``protocols.csv`` when cells
    have a learning curve) and (with ``plots``)
    ``success.png`` plus one ``task_success_<dataset-slug>.png`` per dataset
    into ``out``; returns the paths written."""
    cells = load_cells(results)
    if not cells:
        raise BenchmarkError(
            f"no finished cells under {str(results)!r}; run "
            "'python -m harmodt_algo.benchmark run ... --out <that folder>' first"
        )
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    columns = _columns(cells)
    methods = _method_order(cells)
    written = []
    table = target / "benchmark.md"
    table.write_text(_markdown(cells, columns, methods), encoding="utf-8")
    written.append(table)
    written += _write_csvs(cells, columns, target)
    if any(c.get("unseen") for c in cells):
        written.append(_write_unseen_csv(cells, target))
    if any(c.get("curve") for c in cells):
        written.append(_write_protocols_csv(cells, target))
    if plots:
        written.append(_plot_bars(cells, columns, methods, target / "success.png"))
        for column in columns:
            slug = column.dataset_id.replace("/", "__")
            written.append(
                _plot_heatmap(
                    cells, column, methods, target / f"task_success_{slug}.png"
                )
            )
    return written
