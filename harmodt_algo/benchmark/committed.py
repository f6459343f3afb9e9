"""The committed matrix (``docs/benchmarks``): its data, budget, model size,
seeds and folders, written once.

``examples/benchmark_matrix.py`` prints its commands; studies built on it
(``examples/benchmark_levers.py``) run variants at the same size and budget
and set their cells beside its own, so they read these facts from here rather
than from each other.
"""

from __future__ import annotations

__all__ = [
    "DATASETS",
    "EPISODES_PER_TASK",
    "EVAL_EPISODES",
    "METHODS",
    "REPORT",
    "RESULTS",
    "SEEDS",
    "SIZE",
    "STEPS",
]

#: Recipe data: built by the harness when missing (``SUITE:quality``).
DATASETS = {
    "sub-optimal": ("MT10:sub-optimal", "MT5:sub-optimal"),
    "near-optimal": ("MT10:near-optimal", "MT5:near-optimal"),
}
#: Episodes per task of the recipe datasets (the paper's data has ~2000 near-
#: optimal / ~1000 sub-optimal per task; 50 builds MT10 in about a minute).
EPISODES_PER_TASK = 50
#: Seeds per quality (>= 3 for sub-optimal, where methods differ).
SEEDS = {"sub-optimal": (0, 1, 2), "near-optimal": (0,)}
#: One gradient-step budget for every method.
STEPS = 2_000
#: One transformer size for every DT-like method (``--set`` options; an
#: unprefixed option applies to every selected method that has it).
#: ``protect_1d=false``: this matrix ran before 1-D parameters were protected
#: from dropping (the ``harmodt-f-v0`` behaviour), so it reproduces as run.
SIZE = (
    "embed_size=64",
    "num_layers=2",
    "num_heads=4",
    "protect_1d=false",
    "mtdt-d3rlpy.hidden_units=[64]",
)
EVAL_EPISODES = 10
#: The committed matrix's methods (a subset of ``harmodt_algo.benchmark.METHODS``).
METHODS = (
    "harmodt-f",
    "harmodt-m",
    "harmodt-r",
    "mtdt",
    "prompt-dt",
    "mtbc",
    "mtiql",
    "mtdt-d3rlpy",
    "mttd3bc",
)
RESULTS = "results/benchmark"
REPORT = "docs/benchmarks"
