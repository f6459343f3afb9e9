r"""Does the harmony score help? The controlled study, as commands + a table.

MT10 sub-optimal, 5 seeds, every transformer at one size and budget (embed
64, 2 layers, batch 16, 10 000 steps), 20 held-out goals per task. Methods:
MTDT, Sparse-static (ERK masks that never change, no prompt: the control that
separates "having masks" from "rewiring them"), HarmoDT-F as first committed
(v0), HarmoDT-F with the release-sized change per update, HarmoDT+ (the
low-noise update), Prompt-DT and MTBC. MTDT's cells also evaluate at half the
budget (the learning curve that says whether the budget has converged).

    python examples/harmony_study.py                 # the run commands
    python examples/harmony_study.py | xargs -d '\n' -P 2 -I{} sh -c '{}'
    python examples/harmony_study.py --table         # docs/benchmarks/study.md
    python examples/harmony_study.py --longer        # the 20k-step budget probe
    python examples/harmony_study.py --levers        # HarmoDT+'s levers, separated

Cells resume (``results/study``), so the study can be run in parts.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from harmodt_algo.benchmark.stats import format_paired, mean_ci, paired_difference

DATASET = "MT10:sub-optimal"
DATASET_SLUG = "metaworld-v3__mt10__sub-optimal-v0"
SEEDS = (0, 1, 2, 3, 4)
STEPS = 10_000
EVAL_EPISODES = 20
EPISODES_PER_TASK = 50
SIZE = ("embed_size=64", "num_layers=2", "num_heads=4", "batch_size=16")
RESULTS = "results/study"
TABLE = "docs/benchmarks/study.md"
CURVE = "docs/benchmarks/study_curve.png"
#: the two parallel streams of cells (one per core), each seeds-outer; every
#: method on every seed (HarmoDT-F v0's seeds 1-4 and Prompt-DT's came in
#: later sessions; finished cells are skipped)
STREAMS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("mtdt",), ("harmodt-plus-v0", "mtbc")),
    (("sparse-static", "harmodt-f-release", "prompt-dt"), ("harmodt-f-v0",)),
)
METHODS = (
    "mtdt",
    "sparse-static",
    "harmodt-f-v0",
    "harmodt-f-release",
    "harmodt-plus-v0",
    "prompt-dt",
    "mtbc",
)
REFERENCES = ("mtdt", "sparse-static", "prompt-dt")
#: cells that ran at nice 19 beside another run (Prompt-DT seeds 1 and 3): their
#: recorded train time is mostly waiting for a core, so the table counts them
#: at their method's median
WAITED: frozenset[tuple[str, int]] = frozenset({("prompt-dt", 1), ("prompt-dt", 3)})
CURVE_EVERY = 5_000
#: the budget probe: does the result hold at twice the budget? MTDT and
#: HarmoDT+ at 20 000 steps, evaluated every 5 000, on two seeds
LONGER_STEPS = 20_000
LONGER_SEEDS = (0, 1)
LONGER_METHODS = ("mtdt", "harmodt-plus-v0")
LONGER_RESULTS = "results/study-20k"
#: the levers bundled in HarmoDT+, separated: a preset with settings changed
#: (label, preset, overrides); cells under ``results/study-levers/<name>``.
#: With HarmoDT+ and the release-sized HarmoDT-F they make a 2 x 2 of
#: {fresh-batch, accumulated + leave-one-out + rank} x {prompt, no prompt},
#: and split the bundle into the estimator and LOO + rank.
LEVERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "release-noprompt": (
        "HarmoDT-F (release-sized), no prompt",
        "harmodt-f-release",
        {"prompt_length": 0},
    ),
    "plus-batch": (
        "HarmoDT+, fresh-batch estimator",
        "harmodt-plus-v0",
        {"harmony_estimator": "batch"},
    ),
}
LEVER_RESULTS = "results/study-levers"
#: each lever row is paired against these (a lever's own name included: the
#: two levers against each other isolate leave-one-out + rank)
LEVER_REFERENCES = (
    "harmodt-plus-v0",
    "sparse-static",
    "mtdt",
    "harmodt-f-release",
    "release-noprompt",
)


def _run(
    methods: tuple[str, ...],
    seed: int,
    python: str,
    steps: int = STEPS,
    out: str = RESULTS,
    curve: bool = False,
    extra: dict[str, Any] | None = None,
) -> str:
    curve = curve or methods == ("mtdt",)
    settings = [
        f"{methods[0]}.{key}={json.dumps(value)}"
        for key, value in (extra or {}).items()
    ]
    argv = [
        python,
        *("-m", "harmodt_algo.benchmark", "run"),
        *("--methods", ",".join(methods), "--datasets", DATASET),
        *("--seeds", str(seed), "--steps", str(steps)),
        *("--eval-episodes", str(EVAL_EPISODES)),
        *("--episodes-per-task", str(EPISODES_PER_TASK)),
        *(arg for option in SIZE for arg in ("--set", option)),
        *(("--set", "mtbc.batch_size=256") if "mtbc" in methods else ()),
        *(arg for option in settings for arg in ("--set", option)),
        *(("--curve-every", str(CURVE_EVERY)) if curve else ()),
        *("--threads", "1", "--out", out),
    ]
    return shlex.join(argv)


def commands(python: str = "python") -> list[str]:
    """One shell line per stream: its run commands, seeds outer."""
    lines = [
        [_run(group, seed, python) for seed in SEEDS for group in stream]
        for stream in STREAMS
    ]
    return [" && ".join(line) for line in lines]


def longer_commands(python: str = "python") -> list[str]:
    """The budget probe: one stream per method, seeds in turn."""
    return [
        " && ".join(
            _run((m,), s, python, LONGER_STEPS, LONGER_RESULTS, curve=True)
            for s in LONGER_SEEDS
        )
        for m in LONGER_METHODS
    ]


def lever_commands(python: str = "python") -> list[str]:
    """The lever cells: one stream per lever, seeds in turn."""
    return [
        " && ".join(
            _run((preset,), s, python, out=f"{LEVER_RESULTS}/{name}", extra=extra)
            for s in SEEDS
        )
        for name, (_, preset, extra) in LEVERS.items()
    ]


def _cells(
    results: Path, methods: tuple[str, ...] = METHODS
) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for method in methods:
        for path in sorted((results / DATASET_SLUG / method).glob("seed*.json")):
            cell = json.loads(path.read_text())
            out.setdefault(method, {})[int(cell["seed"])] = cell
    return out


def _header(columns: str, aligns: str, what: str, refs: tuple[str, ...]) -> list[str]:
    """A markdown header: the leading columns, then one paired column per
    reference."""
    paired = " | ".join(f"Δ {what}vs {r} (95 % CI)" for r in refs)
    return [f"| {columns} | {paired} |", f"|{aligns}" + "---:|" * len(refs)]


def _success(by_seed: dict[int, dict[str, Any]]) -> tuple[str, str]:
    """(mean ± sample std, the per-seed values) of success in %."""
    success = np.array([100 * by_seed[s]["success_mean"] for s in sorted(by_seed)])
    mean, sd, *_ = mean_ci(success)  # std with ddof 1 (sample)
    spread = f"{mean:.1f} ± {sd:.1f}" if len(success) > 1 else f"{mean:.1f}"
    return spread, ", ".join(f"{v:.1f}" for v in success)


def lever_table(results: Path, levers: Path) -> str:
    """Each lever's cells paired against HarmoDT+, the controls and its base
    preset (empty if none ran)."""
    cells = _cells(results)
    for name, (_, preset, _) in LEVERS.items():
        found = _cells(levers / name, (preset,)).get(preset)
        if found:
            cells[name] = found
    names = [name for name in LEVERS if name in cells]
    if not names:
        return ""
    refs = LEVER_REFERENCES
    rows = _header(
        "lever cell | seeds | success % (mean ± std) | per seed | mean return",
        "---|---:|---:|---|---:|",
        "",
        refs,
    )
    for name in names:
        by_seed = cells[name]
        spread, per_seed = _success(by_seed)
        returns = np.mean([c["return_mean"] for c in by_seed.values()])
        deltas = [_paired(cells, name, r, "success_mean", 100) for r in refs]
        rows.append(
            f"| {LEVERS[name][0]} | {len(by_seed)} | {spread} | {per_seed} | "
            f"{returns:.0f} | " + " | ".join(deltas) + " |"
        )
    every = [c for name in names for c in cells[name].values()]
    hours = sum(c["train_time_s"] + c["eval_time_s"] for c in every) / 3600
    head = f"Levers inside HarmoDT+ ({len(every)} cells, {hours:.2f} CPU-h)"
    return head + "\n\n" + "\n".join(rows) + "\n"


def table(results: Path) -> str:
    cells = _cells(results)
    lines = _header(
        "method | seeds | success % (mean ± std) | per seed | train min/cell | "
        "mask turnover",
        "---|---:|---:|---|---:|---:|",
        "",
        REFERENCES,
    )
    for method in METHODS:
        by_seed = cells.get(method, {})
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        spread, per_seed = _success(by_seed)
        train = np.mean(list(_train_times(by_seed, method).values())) / 60
        masks = [by_seed[s].get("masks") or {} for s in seeds]
        turnover = (
            f"{100 * np.mean([m.get('turnover_mean', 0.0) for m in masks]):.2f} %"
            if all(masks)
            else "—"
        )
        deltas = [
            _paired(cells, method, ref, "success_mean", 100) for ref in REFERENCES
        ]
        lines.append(
            f"| {by_seed[seeds[0]]['label']} | {len(seeds)} | {spread} | "
            f"{per_seed} | {train:.1f} | {turnover} | " + " | ".join(deltas) + " |"
        )
    returns = _return_rows(cells)
    curve = _curve_rows(cells.get("mtdt", {}), "MTDT")
    every = [(m, c) for m, by_seed in cells.items() for c in by_seed.values()]
    counted = {m: _train_times(by_seed, m) for m, by_seed in cells.items()}
    hours = sum(counted[m][int(c["seed"])] + c["eval_time_s"] for m, c in every)
    waited = [c for m, c in every if (m, int(c["seed"])) in WAITED]
    cost = (
        f"{len(every)} cells, {hours / 3600:.2f} CPU-hours of cell time (train + "
        "evaluation, one thread each, two at a time)"
        + (
            f"; {len(waited)} cells that ran at nice 19 beside another run are "
            "counted at their method's median train time (their recorded wall "
            f"time: {sum(c['train_time_s'] for c in waited) / 60:.0f} min)"
            if waited
            else ""
        )
        + "\n"
    )
    return (
        "\n".join(lines)
        + "\n\n"
        + returns
        + "\n"
        + curve
        + "\n"
        + cost
        + _evaluation_noise([c for _, c in every])
    )


def _evaluation_noise(cells: list[dict[str, Any]]) -> str:
    """How much of a cell's success the finite goal count explains: the
    binomial standard error of the mean over tasks, sqrt(sum_t p_t (1 - p_t)
    / n) / T, for n goals per task; a paired difference of two cells has
    sqrt(2) times it. Compared with the seed spread, it says whether more
    goals (e.g. Meta-World's 50) would sharpen the table."""
    if not cells:
        return ""
    errors = []
    for cell in cells:
        p = np.array(list(cell["success"].values()))  # (T,)
        n = cell["budget"]["eval_episodes"]
        errors.append(100 * np.sqrt(np.sum(p * (1 - p)) / n) / len(p))
    n = cells[0]["budget"]["eval_episodes"]
    pair = np.sqrt(2) * float(np.mean(errors))
    return (
        f"Evaluation noise ({n} goals per task): binomial standard error of a "
        f"cell's mean success {np.mean(errors):.2f} points (range "
        f"{min(errors):.2f}-{max(errors):.2f}), of a paired difference "
        f"{pair:.2f}; with 50 goals per task {pair * np.sqrt(n / 50):.2f}.\n"
    )


def _train_times(by_seed: dict[int, dict[str, Any]], method: str) -> dict[int, float]:
    """Train seconds per seed as counted: a ``WAITED`` cell's at the median of
    the method's other cells."""
    fair = [c["train_time_s"] for s, c in by_seed.items() if (method, s) not in WAITED]
    median = float(np.median(fair)) if fair else 0.0
    return {
        s: median if (method, s) in WAITED else float(c["train_time_s"])
        for s, c in by_seed.items()
    }


def _paired(
    cells: dict[str, dict[int, dict[str, Any]]],
    method: str,
    ref: str,
    key: str,
    scale: float,
) -> str:
    """Mean paired per-seed difference of ``key`` against ``ref``, 95 % CI."""
    if method == ref:
        return "—"
    values = {s: scale * c[key] for s, c in cells.get(method, {}).items()}
    refs = {s: scale * c[key] for s, c in cells.get(ref, {}).items()}
    return format_paired(paired_difference(values, refs), 1 if scale == 100 else 0)


def _return_rows(cells: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The finer measure: mean episode return, paired against the references."""
    rows = _header("method | mean return", "---|---:|", "return ", REFERENCES)
    for method in METHODS:
        by_seed = cells.get(method, {})
        if not by_seed:
            continue
        mean = np.mean([c["return_mean"] for c in by_seed.values()])
        deltas = [_paired(cells, method, r, "return_mean", 1) for r in REFERENCES]
        label = by_seed[min(by_seed)]["label"]
        rows.append(f"| {label} | {mean:.0f} | " + " | ".join(deltas) + " |")
    return "\n".join(rows) + "\n"


def _curve_rows(by_seed: dict[int, dict[str, Any]], label: str) -> str:
    points: dict[int, list[float]] = {}
    for cell in by_seed.values():
        for point in cell.get("curve") or ():
            points.setdefault(int(point["step"]), []).append(
                100 * point["success_mean"]
            )
    if not points:
        return ""
    rows = [f"| {label} at step | seeds | success % (mean ± std) | per seed |"]
    rows.append("|---:|---:|---:|---|")
    for step in sorted(points):
        values = np.array(points[step])
        mean, sd, *_ = mean_ci(values)
        per_seed = ", ".join(f"{v:.1f}" for v in values)
        rows.append(f"| {step} | {len(values)} | {mean:.1f} ± {sd:.1f} | {per_seed} |")
    return "\n".join(rows) + "\n"


def longer_table(results: Path) -> str:
    """The budget probe's curves, one table per method (empty if not run)."""
    cells = _cells(results)
    parts = [
        _curve_rows(cells[m], cells[m][min(cells[m])]["label"])
        for m in LONGER_METHODS
        if cells.get(m)
    ]
    if not parts:
        return ""
    every = [c for by_seed in cells.values() for c in by_seed.values()]
    hours = sum(c["train_time_s"] + c["eval_time_s"] for c in every) / 3600
    head = f"Budget probe: {LONGER_STEPS} steps ({len(every)} cells, {hours:.2f} CPU-h)"
    return head + "\n\n" + "\n".join(parts)


def plot_curve(results: Path, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for seed, cell in sorted(_cells(results).get("mtdt", {}).items()):
        curve = cell.get("curve") or []
        ax.plot(
            [p["step"] for p in curve],
            [100 * p["success_mean"] for p in curve],
            marker="o",
            label=f"seed {seed}",
        )
    ax.set_xlabel("gradient step")
    ax.set_ylabel("MTDT mean success (%)")
    ax.set_title("MTDT learning curve, MT10 sub-optimal")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="store_true", help=f"write {TABLE}")
    parser.add_argument(
        "--longer", action="store_true", help="the 20k-step budget probe's commands"
    )
    parser.add_argument(
        "--levers", action="store_true", help="the lever cells' commands"
    )
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--python", default="python")
    args = parser.parse_args()
    if args.longer:
        print("\n".join(longer_commands(args.python)))
        return
    if args.levers:
        print("\n".join(lever_commands(args.python)))
        return
    if not args.table:
        print("\n".join(commands(args.python)))
        return
    text = table(Path(args.results))
    probe = longer_table(Path(LONGER_RESULTS))
    text += "\n" + probe if probe else ""
    levers = lever_table(Path(args.results), Path(LEVER_RESULTS))
    text += "\n" + levers if levers else ""
    Path(TABLE).write_text(text)
    plot_curve(Path(args.results), Path(CURVE))
    print(text)


if __name__ == "__main__":
    main()
