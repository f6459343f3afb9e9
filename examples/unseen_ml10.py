r"""Unseen tasks on ML10: train on ML10-TRAIN, adapt to ML10-TEST from 5 demos.

MT-style sub-optimal data (50 episodes per task), every transformer at the
harmony study's size and budget (embed 64, 2 layers, batch 16, 10 000 steps),
3 seeds, 20 held-out goals per task. HarmoDT-F adapts by ``vote``, ``tune``
(300 prompt steps) and ``finetune`` (300 steps on every shared weight, one copy
per test task: the upper reference); MTDT acts zero-shot, Prompt-DT gets the
demos' prompt.

    python examples/unseen_ml10.py                  # the run commands (2 streams)
    python examples/unseen_ml10.py | xargs -d '\n' -P 2 -I{} sh -c '{}'
    python examples/unseen_ml10.py --table          # docs/benchmarks/ml10.md

Cells resume (``results/ml10``), so the run can be done in parts.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from harmodt_algo.benchmark.stats import format_paired, mean_ci, paired_difference

TRAIN, HELD_OUT = "ML10-TRAIN:sub-optimal", "ML10-TEST:sub-optimal"
SLUG = "metaworld-v3__ml10-train__sub-optimal-v0"
SEEDS = (0, 1, 2)
SIZE = ("embed_size=64", "num_layers=2", "num_heads=4", "batch_size=16")
RESULTS, TABLE, REPORT = (
    "results/ml10",
    "docs/benchmarks/ml10.md",
    "docs/benchmarks/ml10",
)
#: (methods, seeds) per stream, one stream per core; HarmoDT-F's cells are the
#: long ones (three adaptations)
STREAMS = (
    ((("harmodt-f",), SEEDS), (("mtdt",), (2,))),
    ((("mtdt", "prompt-dt"), (0, 1)), (("prompt-dt",), (2,))),
)
#: (method, adaptation) rows, and the references of the paired differences
ROWS = (
    ("mtdt", "zero-shot"),
    ("prompt-dt", "prompt"),
    ("harmodt-f", "vote"),
    ("harmodt-f", "tune"),
    ("harmodt-f", "finetune"),
)
REFERENCES = (("mtdt", "zero-shot"), ("prompt-dt", "prompt"))


def _run(methods: tuple[str, ...], seed: int, python: str) -> str:
    adapt = ("--adapt", "vote,tune,finetune") if "harmodt-f" in methods else ()
    return shlex.join(
        [
            *(python, "-m", "harmodt_algo.benchmark", "run"),
            *("--methods", ",".join(methods), *adapt, "--seeds", str(seed)),
            *("--datasets", TRAIN, "--held-out", HELD_OUT, "--demos", "5"),
            *("--steps", "10000", "--eval-episodes", "20"),
            *("--episodes-per-task", "50", "--build-missing"),
            *(arg for option in SIZE for arg in ("--set", option)),
            *("--threads", "1", "--out", RESULTS),
        ]
    )


def commands(python: str = "python") -> list[str]:
    return [
        " && ".join(_run(m, s, python) for m, seeds in stream for s in seeds)
        for stream in STREAMS
    ]


def _cells(results: Path, slug: str) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((results / slug).glob("*/seed*.json")):
        cell = json.loads(path.read_text())
        out.setdefault(cell["method"], {})[int(cell["seed"])] = cell
    return out


def _unseen(
    cells: dict[str, dict[int, dict[str, Any]]], row: tuple[str, str]
) -> dict[int, float]:
    method, adaptation = row
    return {
        seed: 100 * c["unseen"]["adapt"][adaptation]["success_mean"]
        for seed, c in cells.get(method, {}).items()
        if adaptation in c["unseen"]["adapt"]
    }


def _row(cells: dict[str, dict[int, dict[str, Any]]], row: tuple[str, str]) -> str:
    unseen = _unseen(cells, row)
    by_seed = cells[row[0]]
    seen = mean_ci([100 * c["success_mean"] for c in by_seed.values()])
    stat = mean_ci(list(unseen.values()))
    results = [c["unseen"]["adapt"][row[1]] for c in by_seed.values()]
    times = [r["adapt_time_s"] for r in results]
    returns = mean_ci([r["return_mean"] for r in results])
    deltas = [
        format_paired(paired_difference(unseen, _unseen(cells, ref)))
        if ref != row
        else "—"
        for ref in REFERENCES
    ]
    cols = [
        by_seed[min(by_seed)]["label"],
        row[1],
        f"{seen.mean:.1f} ± {seen.std:.1f}",
        f"{stat.mean:.1f} ± {stat.std:.1f}",
        ", ".join(f"{unseen[s]:.1f}" for s in sorted(unseen)),
        f"{returns.mean:.0f} ± {returns.std:.0f}",
        f"{sum(times) / len(times):.0f}",
        *deltas,
    ]
    return "| " + " | ".join(cols) + " |"


def _cost(cell: dict[str, Any]) -> float:
    unseen = cell["unseen"]
    adapt = sum(r["adapt_time_s"] for r in unseen["adapt"].values())
    seen = cell["train_time_s"] + cell["eval_time_s"]
    return float(seen + unseen.get("eval_time_s", 0.0) + adapt)


def table(results: Path, slug: str = SLUG) -> str:
    cells = _cells(results, slug)
    refs = [f"Δ unseen vs {m} {a} (95 % CI)" for m, a in REFERENCES]
    cols = ["method", "adaptation", "seen %", "unseen % (mean ± std)", "per seed"]
    lines = [
        "| " + " | ".join([*cols, "unseen return", "adapt s", *refs]) + " |",
        "|---|---|---:|---:|---|---:|---:|" + "---:|" * len(REFERENCES),
        *(_row(cells, row) for row in ROWS if _unseen(cells, row)),
    ]
    every = [c for by_seed in cells.values() for c in by_seed.values()]
    data = every[0]["unseen"]["data_success"] if every else {}
    ref = ", ".join(f"{t} {100 * v:.0f}" for t, v in data.items())
    hours = sum(_cost(c) for c in every) / 3600
    return (
        "\n".join(lines)
        + "\n\n± is the sample standard deviation (ddof 1) over seeds; Δ is the "
        "paired per-seed difference with its 95 % t-interval (n = 3: t = 4.30)."
        + "\n\nThe held-out data's own success rate (%, 50 episodes per task): "
        + f"{ref}.\n\n{len(every)} cells, {hours:.2f} CPU-hours (training, "
        "evaluation, adaptation; one thread each, two at a time)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--table", action="store_true", help=f"write {TABLE} and {REPORT}/"
    )
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--python", default="python")
    args = parser.parse_args()
    if not args.table:
        print("\n".join(commands(args.python)))
        return
    from harmodt_algo.benchmark import report

    text = table(Path(args.results))
    Path(TABLE).write_text(text)
    report(Path(args.results), Path(REPORT), plots=False)
    print(text)


if __name__ == "__main__":
    main()
