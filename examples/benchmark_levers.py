r"""Why HarmoDT does (not) beat MTDT here: the mask levers, as commands + a table.

The first implementation's mask schedule (rewire 2 % of a task's active
weights, at most, every 500 steps; not the release's, which rewires at most
100 entries of ~4.2 M per update, see docs/benchmarks.md) barely moves the
masks in a short run, so HarmoDT is then a
dense-ish MTDT with a fixed random 20 %-sparse mask per task. Each variant below
changes one lever of HarmoDT-F on the committed matrix's hardest column, at the
committed matrix's size, budget and seeds; the table sets the variants beside
the matrix's own MTDT / Prompt-DT / HarmoDT-F cells (same data, same seeds).

    python examples/benchmark_levers.py                # print the run commands
    python examples/benchmark_levers.py | xargs -d '\n' -P 2 -I{} sh -c '{}'
    python examples/benchmark_levers.py --table        # write the table

Each variant writes its own results folder (``results/levers/<variant>``), so
its cells resume like the matrix's and never collide with them.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from harmodt_algo.benchmark import load_cells, parse_dataset
from harmodt_algo.benchmark.committed import (
    EPISODES_PER_TASK,
    EVAL_EPISODES,
    RESULTS,
    SIZE,
    STEPS,
)

DATASET = "MT10:sub-optimal"
#: variants also run on a second column, to see whether a result replicates
REPLICATED: dict[str, tuple[str, ...]] = {"no-prompt": ("MT5:sub-optimal",)}
SEEDS = (0, 1, 2)
METHOD = "harmodt-f"
#: variant -> the options it changes (``--set`` for HarmoDT-F), one lever at a
#: time on top of the previous row where that makes the lever visible at all.
VARIANTS: dict[str, tuple[str, ...]] = {
    "interval-100": ("mask_interval=100",),
    "interval-100-change-0.2": ("mask_interval=100", "change_fraction=0.2"),
    "interval-100-change-0.2-sparsity-0.5": (
        "mask_interval=100",
        "change_fraction=0.2",
        "sparsity=0.5",
    ),
    "interval-100-change-0.2-mixed": (
        "mask_interval=100",
        "change_fraction=0.2",
        'task_schedule="mixed"',
    ),
    # the masks alone carry the task (the v0 schedule, no prompt)
    "no-prompt": ("prompt_length=0",),
}
#: the matrix methods shown as references, in table order
REFERENCES = ("mtdt", "prompt-dt", "harmodt-f")
LEVERS = "results/levers"
#: the matrix's size options that apply to HarmoDT (unprefixed ones)
HARMODT_SIZE = tuple(o for o in SIZE if "." not in o.split("=", 1)[0])
TABLE = "docs/benchmarks/levers.md"


def commands(python: str = "python") -> list[str]:
    """One ``run`` command per variant."""
    out = []
    for name, options in VARIANTS.items():
        argv = [
            python,
            *("-m", "harmodt_algo.benchmark", "run"),
            *("--methods", METHOD),
            *("--datasets", ",".join((DATASET, *REPLICATED.get(name, ())))),
            *("--seeds", ",".join(map(str, SEEDS)), "--steps", str(STEPS)),
            *("--eval-episodes", str(EVAL_EPISODES)),
            *("--episodes-per-task", str(EPISODES_PER_TASK)),
            *(arg for option in (*HARMODT_SIZE, *options) for arg in ("--set", option)),
            *("--threads", "1", "--out", f"{LEVERS}/{name}"),
        ]
        out.append(shlex.join(argv))
    return out


def _row(label: str, cells: list[dict[str, Any]]) -> str:
    cells = sorted(cells, key=lambda c: int(c["seed"]))
    success = np.array([100.0 * c["success_mean"] for c in cells])
    per_seed = ", ".join(f"{v:.0f}" for v in success)
    masks = [c["masks"] for c in cells if c.get("masks") is not None]
    if masks and len(masks) == len(cells):
        drift = f"{100 * np.mean([m['drift_mean'] for m in masks]):.2f}"
        overlap = f"{np.mean([m['overlap_final'] for m in masks]):.3f}"
    else:
        drift = overlap = "-"
    loss = np.mean([c["final_metrics"]["loss"] for c in cells])
    cosine = [c["final_metrics"].get("grad_cosine") for c in cells]
    cos = "-" if None in cosine else f"{np.mean(cosine):.3f}"
    minutes = np.mean([c["train_time_s"] + c["eval_time_s"] for c in cells]) / 60
    return (
        f"| {label} | {success.mean():.1f} ± {success.std():.1f} | {per_seed} | "
        f"{drift} | {overlap} | {loss:.3f} | {cos} | {minutes:.1f} |"
    )


def table() -> str:
    """Markdown: per dataset, references from the matrix, then the variants."""

    def cells_of(root: str, dataset_id: str, method: str) -> list[dict[str, Any]]:
        if not Path(root).is_dir():
            return []
        return [
            c
            for c in load_cells(root)
            if c["dataset_id"] == dataset_id
            and c["method"] == method
            and int(c["seed"]) in SEEDS
        ]

    lines = [
        f"{STEPS} steps, seeds {', '.join(map(str, SEEDS))}; "
        "success = mean over tasks of 10 held-out goals, final checkpoint "
        "(mean ± population std over seeds). Drift = % of a task's initial mask "
        "entries switched off by the end (as many were switched on); overlap = "
        "mean pairwise Jaccard overlap of the task masks at the end "
        "(1 = all tasks share every weight). Loss = mean training loss over the "
        "run; cosine = mean pairwise cosine of the task gradients at the mask "
        "updates (near 0: the tasks' gradients barely conflict or agree).",
    ]
    extra = sorted({d for ds in REPLICATED.values() for d in ds} - {DATASET})
    for dataset in (DATASET, *extra):
        dataset_id = parse_dataset(dataset).dataset_id
        lines += [
            "",
            f"**{dataset_id}**",
            "",
            "| method | success (%) | per seed | mask drift (%) | mask overlap | "
            "train loss | grad cosine | min / cell |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in REFERENCES:
            cells = cells_of(RESULTS, dataset_id, method)
            if cells:
                schedule = ", v0 mask schedule" if method == METHOD else ""
                label = f"{cells[0]['label']} (matrix{schedule})"
                lines.append(_row(label, cells))
        for name, options in VARIANTS.items():
            cells = cells_of(f"{LEVERS}/{name}", dataset_id, METHOD)
            if cells:
                lines.append(_row(f"HarmoDT-F, {', '.join(options)}", cells))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python", help="interpreter to call")
    parser.add_argument("--table", action="store_true", help=f"write {TABLE}")
    args = parser.parse_args()
    if args.table:
        Path(TABLE).parent.mkdir(parents=True, exist_ok=True)
        Path(TABLE).write_text(table())
        print(Path(TABLE).read_text())
    else:
        print("\n".join(commands(args.python)))


if __name__ == "__main__":
    main()
