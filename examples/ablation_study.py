r"""The conflict-resolution peers and the paper's open questions (issue 23), as
commands and tables, at the harmony study's size and budget so that its MTDT
and Sparse-static cells are reused (``examples/harmony_study.py`` holds that
setting: MT10 sub-optimal, embed 64, 2 layers, batch 16, 10,000 steps, 20
held-out goals per task).

    python examples/ablation_study.py                 # the commands: two streams
    python examples/ablation_study.py --difficulty    # MT50's easiest/hardest 10
    python examples/ablation_study.py --table         # docs/ablations.md's tables

Rows: PCGrad and CAGrad (5 seeds); mask start (uniform, learned) for
Sparse-static and HarmoDT+; sparsity 0.5 / 0.8; HarmoDT+ updating every 25 and
500 steps (3 seeds each). Cells resume (``results/ablations/<row>``); the
harmony study's cells are read from ``results/study``.
"""

from __future__ import annotations

import argparse
import json
import runpy
import shlex
from pathlib import Path
from typing import Any

from harmodt_algo.benchmark.stats import format_paired, paired_difference

HERE = Path(__file__).resolve().parent
STUDY = runpy.run_path(str(HERE / "harmony_study.py"))  # the shared setting
RESULTS = "results/ablations"
#: row name -> (label, preset, settings changed, seeds)
ROWS: dict[str, tuple[str, str, dict[str, Any], tuple[int, ...]]] = {
    "pcgrad": ("PCGrad", "pcgrad", {}, (0, 1, 2, 3, 4)),
    "cagrad": ("CAGrad (c = 0.5)", "cagrad", {}, (0, 1, 2, 3, 4)),
    "plus": ("HarmoDT+ (scale score)", "harmodt-plus", {}, (0, 1, 2, 3, 4)),
    "static-uniform": (
        "Sparse-static, uniform start", "sparse-static", {"mask_init": "uniform"},
        (0, 1, 2),
    ),
    "static-learned": (
        "Sparse-static, learned start", "sparse-static", {"mask_init": "learned"},
        (0, 1, 2),
    ),
    "plus-uniform": (
        "HarmoDT+, uniform start", "harmodt-plus", {"mask_init": "uniform"}, (0, 1, 2)
    ),
    "plus-learned": (
        "HarmoDT+, learned start", "harmodt-plus", {"mask_init": "learned"}, (0, 1, 2)
    ),
    "static-s05": ("Sparse-static, sparsity 0.5", "sparse-static", {"sparsity": 0.5},
                   (0, 1, 2)),
    "static-s08": ("Sparse-static, sparsity 0.8", "sparse-static", {"sparsity": 0.8},
                   (0, 1, 2)),
    "plus-s05": ("HarmoDT+, sparsity 0.5", "harmodt-plus", {"sparsity": 0.5},
                 (0, 1, 2)),
    "plus-i25": ("HarmoDT+, update every 25 steps", "harmodt-plus",
                 {"mask_interval": 25}, (0, 1, 2)),
    "plus-i500": ("HarmoDT+, update every 500 steps", "harmodt-plus",
                  {"mask_interval": 500}, (0, 1, 2)),
}  # fmt: skip
REFERENCES = ("mtdt", "sparse-static")


def _run(row: str, seed: int, python: str) -> str:
    _, preset, extra, _ = ROWS[row]
    settings = [f"{preset}.{k}={json.dumps(v)}" for k, v in extra.items()]
    argv = [
        python, "-m", "harmodt_algo.benchmark", "run",
        "--methods", preset, "--datasets", STUDY["DATASET"],
        "--seeds", str(seed), "--steps", str(STUDY["STEPS"]),
        "--eval-episodes", str(STUDY["EVAL_EPISODES"]),
        "--episodes-per-task", str(STUDY["EPISODES_PER_TASK"]),
        *(a for option in (*STUDY["SIZE"], *settings) for a in ("--set", option)),
        "--threads", "1", "--out", f"{RESULTS}/{row}",
    ]  # fmt: skip
    return shlex.join(argv)


def commands(python: str = "python") -> list[str]:
    """Two streams (one per core), seeds outer, rows alternating."""
    streams: list[list[str]] = [[], []]
    cells = [(s, row) for row, (*_, seeds) in ROWS.items() for s in seeds]
    for k, (seed, row) in enumerate(sorted(cells)):
        streams[k % 2].append(_run(row, seed, python))
    return [" && ".join(s) for s in streams]


def difficulty_sets(metadata: dict[str, Any], size: int = 10) -> tuple[list[str], ...]:
    """The ``size`` easiest and hardest tasks of a dataset by its own success
    (``task_stats`` of a recipe dataset), in suite order."""
    stats = metadata["task_stats"]
    order = metadata["task_names"]
    ranked = sorted(order, key=lambda t: (-stats[t]["success_rate"], order.index(t)))
    easy, hard = set(ranked[:size]), set(ranked[-size:])
    return [t for t in order if t in easy], [t for t in order if t in hard]


def _success(folder: Path, method: str) -> dict[int, float]:
    slug = STUDY["DATASET_SLUG"]
    out = {}
    for path in sorted((folder / slug / method).glob("seed*.json")):
        cell = json.loads(path.read_text())
        out[int(cell["seed"])] = 100 * float(cell["success_mean"])
    return out


def table(results: Path, study: Path) -> str:
    refs = {m: _success(study, m) for m in REFERENCES}
    head = "| row | seeds | success % |" + "".join(
        f" Δ vs {r} (95 % CI) |" for r in REFERENCES
    )
    lines = [head, "|---|---:|---:|" + "---:|" * len(REFERENCES)]
    for row, (label, preset, _, _) in ROWS.items():
        mine = _success(results / row, preset)
        if not mine:
            continue
        mean = sum(mine.values()) / len(mine)
        deltas = [format_paired(paired_difference(mine, refs[r])) for r in REFERENCES]
        lines.append(f"| {label} | {len(mine)} | {mean:.1f} | " + " | ".join(deltas))
        lines[-1] += " |"
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--difficulty", metavar="DATASET_ID", nargs="?",
                        const="metaworld-v3/mt50/sub-optimal-v0")  # fmt: skip
    parser.add_argument("--python", default="python")
    args = parser.parse_args()
    if args.difficulty:
        import minari

        meta = minari.load_dataset(args.difficulty).storage.metadata
        easy, hard = difficulty_sets(dict(meta))
        print("easiest:", ",".join(easy))
        print("hardest:", ",".join(hard))
    elif args.table:
        print(table(Path(RESULTS), Path(STUDY["RESULTS"])))
    else:
        print("\n".join(commands(args.python)))


if __name__ == "__main__":
    main()
