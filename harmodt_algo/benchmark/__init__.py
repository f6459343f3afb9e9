"""The benchmark harness: methods x datasets x seeds, resumable, then a report.

Why it exists: the paper's Table 1 compares HarmoDT with multi-task baselines,
but its numbers come from other data (Meta-World v2 replay buffers), other
code and best-checkpoint selection. The only comparison this project can
stand behind is one it runs itself, where every method gets

* the same data (a ``dataset_recipes`` Minari dataset),
* the same gradient-step budget (``steps``; batch sizes stay each method's own),
* the same evaluator (:class:`~harmodt_algo.evaluation.MultiTaskEvaluator`: every
  task, ``eval_episodes`` held-out goal(s) per task, the same goals for every
  method and seed) applied to the FINAL checkpoint (no checkpoint picking).

Each (dataset, method, seed) cell is independent: it trains from scratch,
evaluates, and writes ``<out>/<dataset-slug>/<method>/seed<k>.json`` atomically
(temp file + ``os.replace``) only when complete. A restarted matrix skips the
finished cells (and says so), so a long CPU matrix can be interrupted at any
time; a cell made with a different budget is an error, not a silent mix.
A HarmoDT cell also checkpoints every ``checkpoint_every`` steps (1000) into
``<out>/<dataset-slug>/<method>/.seed<k>.checkpoints/``: stopped (SIGINT/SIGTERM
finish the step and checkpoint) or killed, it resumes from its newest readable
checkpoint and ends with the record an uninterrupted cell would have had,
wall-clock fields aside; the folder goes once the cell is written. Baseline
cells are short and restart from scratch.
Held-out protocol (:mod:`.unseen`, ``--held-out ML10-TEST:sub-optimal``):
after its seen-task evaluation, each cell adapts a copy of its model to the
held-out dataset's tasks from the first ``--demos`` episodes of each
(``HarmoDT.add_task``: the ``--adapt`` methods for HarmoDT, zero-shot for
MTDT, the prompt for Prompt-DT; d3rlpy's one-hot baselines are recorded as
not applicable) and evaluates them with the same settings, as the cell's
``unseen`` record; the held-out settings are part of the budget.
A HarmoDT cell also records how far its masks moved (``masks``: per-task drift
from the initial masks, mean pairwise overlap before and after), because
whether the harmony score changes anything is the question a result raises.

:func:`report` turns a results folder into a markdown table in the shape of
the paper's Table 1, CSVs of every cell and every task, and PNG figures; cells
with a learning curve (``curve_every``, on ``curve_episodes`` goals per task)
add the protocols table: the final checkpoint beside the HarmoDT release's best
of the curve's evaluations, and the selection bias between them.

Timing: ``train_time_s`` covers building the method's model and replay data
and its ``fit``; ``eval_time_s`` covers building the evaluation environments
(a fresh evaluator per cell, so every cell pays the same) and the episodes.
Loading the Minari dataset is shared by the cells of a dataset and not counted.
A resumed cell's ``train_time_s`` adds up its sessions up to their last
checkpoints (steps lost to a kill are not counted).

Modules, each importing only those above it: :mod:`.errors`, :mod:`.methods`
(names, labels, options), :mod:`.datasets` (names, building), :mod:`.resume`
(a HarmoDT cell's checkpoints), :mod:`.unseen` (the held-out protocol),
:mod:`.cells` (one cell), :mod:`.matrix` (many, resumable), :mod:`.reporting`
(reads cell files only), :mod:`.cli`; :mod:`.committed` holds the committed
matrix's settings.

Command line (:func:`main`; ``harmodt benchmark ...`` delegates to it)::

    python -m harmodt_algo.benchmark run --methods harmodt-f,mtdt,mtbc \\
        --datasets metaworld-v3/mt5/near-optimal-v0 --seeds 0,1,2 --steps 5000 \\
        --out results/
    python -m harmodt_algo.benchmark run --methods harmodt-f,prompt-dt,mtdt \\
        --datasets ML10-TRAIN:sub-optimal --held-out ML10-TEST:sub-optimal \\
        --adapt vote,tune --demos 5 --steps 5000 --out results-ml10/
    python -m harmodt_algo.benchmark report results/ --out docs/benchmarks
    python -m harmodt_algo.benchmark list
"""

from __future__ import annotations

from ..summary import count_parameters
from .cells import (
    CELL_SCHEMA,
    BenchmarkSettings,
    CellKey,
    cell_path,
    checkpoint_dir,
    run_cell,
)
from .cli import build_parser, main, parse_overrides
from .datasets import DatasetSpec, ensure_dataset, parse_dataset
from .errors import BenchmarkError
from .matrix import MatrixSummary, run_matrix
from .methods import (
    BASELINE_METHODS,
    HARMODT_METHODS,
    METHOD_LABELS,
    METHODS,
    PAPER_TABLE1,
    check_methods,
    method_options,
)
from .reporting import QUALITY_SHORT, load_cells, report
from .unseen import HeldOut, HeldOutData, load_held_out, parse_adapt

__all__ = [
    "BenchmarkError",
    "BenchmarkSettings",
    "CellKey",
    "DatasetSpec",
    "HARMODT_METHODS",
    "HeldOut",
    "HeldOutData",
    "BASELINE_METHODS",
    "METHODS",
    "METHOD_LABELS",
    "MatrixSummary",
    "PAPER_TABLE1",
    "cell_path",
    "check_methods",
    "checkpoint_dir",
    "count_parameters",
    "ensure_dataset",
    "load_cells",
    "load_held_out",
    "main",
    "parse_adapt",
    "parse_dataset",
    "report",
    "run_cell",
    "run_matrix",
    # also public before the harness was split into modules
    "CELL_SCHEMA",
    "QUALITY_SHORT",
    "build_parser",
    "method_options",
    "parse_overrides",
]
