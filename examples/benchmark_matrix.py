r"""The committed benchmark matrix, as commands (it runs nothing itself).

Every method (5 HarmoDT presets, 5 one-hot d3rlpy baselines) on MT5 and MT10,
near-optimal and sub-optimal recipe data, one gradient-step budget for all,
3 seeds (the paper's count), final checkpoint, 10 held-out goals per task.
Cells are resumable: rerunning a command skips finished cells, so the matrix
can be run a piece at a time (one dataset, one method, one seed).

    python examples/benchmark_matrix.py                 # print the commands
    python examples/benchmark_matrix.py | sh            # run them one by one
    python examples/benchmark_matrix.py | head -4 | xargs -d '\n' -P 2 -I{} sh -c '{}'
    python examples/benchmark_matrix.py | tail -1 | sh  # then the report
    python examples/benchmark_matrix.py --device cuda:0

There is one ``run`` command per dataset (their cells live in separate
folders, so the commands may run side by side: one per core, each with
``--threads 1``). Do not run two copies of the *same* command at once: both
would compute the same cells.

Sizing, measured on the shared 2-core CPU box (torch 1 thread, MT5, default
sizes): HarmoDT presets and d3rlpy's DT ~0.25 s per gradient step (a HarmoDT
mask update adds ~0.4 s every 500 steps), CQL ~0.095 s, IQL ~0.023 s, TD3+BC
~0.009 s, BC ~0.004 s; evaluation ~2 ms per env step (MT5, 10 episodes per
task: 25,000 env steps, ~50 s; MT10: ~100 s). With ``STEPS = 5000`` a DT cell
is ~22 min and the whole matrix (120 cells) ~30 CPU-hours. Two torch threads
on a busy 2-core machine were 10x *slower* (3.3 s per step): keep
``--threads 1`` on CPU.
"""

from __future__ import annotations

import argparse
import shlex

#: Recipe data: built by the harness when missing (``SUITE:quality``).
DATASETS = {
    "near-optimal": ("MT5:near-optimal", "MT10:near-optimal"),
    "sub-optimal": ("MT5:sub-optimal", "MT10:sub-optimal"),
}
#: Episodes per task of the recipe datasets (the paper's data has ~2000 near-
#: optimal / ~1000 sub-optimal per task; 100 keeps a CPU build near a minute
#: per task).
EPISODES_PER_TASK = 100
#: Seeds per quality (>= 3 for sub-optimal, where methods differ).
SEEDS = {"near-optimal": (0, 1, 2), "sub-optimal": (0, 1, 2)}
#: One gradient-step budget for every method.
STEPS = 5_000
EVAL_EPISODES = 10
METHODS = (
    "harmodt-f",
    "harmodt-m",
    "harmodt-r",
    "mtdt",
    "prompt-dt",
    "mtbc",
    "mtiql",
    "mtdt-d3rlpy",
    "mtcql",
    "mttd3bc",
)
RESULTS = "results/benchmark"
REPORT = "docs/benchmarks"


def commands(device: str = "cpu", python: str = "python") -> list[str]:
    """One ``run`` command per (quality, dataset) then one ``report``."""
    out = []
    for quality, datasets in DATASETS.items():
        for dataset in datasets:
            argv = [
                python,
                "-m",
                "harmodt_algo.benchmark",
                "run",
                "--methods",
                ",".join(METHODS),
                "--datasets",
                dataset,
                "--seeds",
                ",".join(map(str, SEEDS[quality])),
                "--steps",
                str(STEPS),
                "--eval-episodes",
                str(EVAL_EPISODES),
                "--episodes-per-task",
                str(EPISODES_PER_TASK),
                "--device",
                device,
                *(["--threads", "1"] if device == "cpu" else []),
                "--out",
                RESULTS,
            ]
            out.append(shlex.join(argv))
    report = [python, "-m", "harmodt_algo.benchmark", "report", RESULTS]
    out.append(shlex.join([*report, "--out", REPORT]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--python", default="python", help="interpreter to call")
    args = parser.parse_args()
    print("\n".join(commands(args.device, args.python)))


if __name__ == "__main__":
    main()
