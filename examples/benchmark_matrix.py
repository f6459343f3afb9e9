r"""The committed benchmark matrix, as commands (it runs nothing itself).

Every method (5 HarmoDT presets, 4 one-hot d3rlpy baselines) on MT5 and MT10,
near-optimal and sub-optimal recipe data, one gradient-step budget and one
transformer size for all, 3 seeds on sub-optimal data (1 on near-optimal),
final checkpoint, 10 held-out goals per task. Cells are resumable: rerunning a
command skips finished cells, so the matrix can be run a piece at a time.

    python examples/benchmark_matrix.py                 # print the commands
    python examples/benchmark_matrix.py | sh            # run them one by one
    python examples/benchmark_matrix.py | head -4 | xargs -d '\n' -P 2 -I{} sh -c '{}'
    python examples/benchmark_matrix.py | tail -1 | sh  # then the report
    python examples/benchmark_matrix.py --device cuda:0

There is one ``run`` command per dataset (their cells live in separate
folders, so the commands may run side by side: one per core, each with
``--threads 1``). Do not run two copies of the *same* command at once: both
would compute the same cells. The sub-optimal commands come first (longest
first, for ``xargs -P``).

Sizing (the committed run took 2.7 CPU-hours, 82 min on the 2-core box):
the transformers are shrunk to embed 64, 2 layers, 4 heads, K 20, batch 64
(HarmoDT presets and d3rlpy's DT alike, ~0.07 s per step on one thread,
0.17-0.23 M parameters), 2000 gradient steps per cell, 50 episodes per task. The
MLP baselines keep their 256x2 networks (cheap). d3rlpy CQL is left out of the
committed run: at ~0.1 s per step it costs as much as a DT cell and is not one
of the paper's baselines; add ``mtcql`` to ``METHODS`` (in
``harmodt_algo/benchmark/committed.py``, where the matrix's settings live) to
include it. The paper's own budget (embed 256, 6 layers, 5.3 M parameters,
10^5-10^6 steps) is 50-500x the steps at ~20x the parameters.
"""

from __future__ import annotations

import argparse
import shlex

# the matrix's settings live in the package, so studies built on it share them
from harmodt_algo.benchmark.committed import (
    DATASETS,
    EPISODES_PER_TASK,
    EVAL_EPISODES,
    METHODS,
    REPORT,
    RESULTS,
    SEEDS,
    SIZE,
    STEPS,
)


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
                *(arg for option in SIZE for arg in ("--set", option)),
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
