"""Command line: ``harmodt train | evaluate | info | adapt | benchmark``.

Why a thin layer: everything it does is the library's own API (``HarmoDT``,
``MultiTaskEvaluator``, ``masks``, :mod:`harmodt_algo.plots`), so a run started
here is the same as one written in Python. What the CLI adds is what a run on a
shared machine needs: one run directory holding d3rlpy's logs, the final
``model.d3`` and a ``run.json`` (dataset id, preset, steps) so that
``harmodt evaluate`` finds the model's evaluation environments without being
told again; a results table at the end; and bad input reported as ONE line on
stderr (exit code 2), never a traceback.

::

    harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 --preset harmodt-f \\
        --steps 20000 --eval-every 5000 --logdir runs
    harmodt evaluate runs/<run>/model.d3 --episodes 10 [--json]
    harmodt info runs/<run>/model.d3 [--json]

Modules, each importing only those above it: :mod:`.common` (errors, file
names, loaders), :mod:`.parser`, :mod:`.evaluate`, :mod:`.train`, :mod:`.adapt`,
:mod:`.info`; :func:`main` here. minari, metaworld, matplotlib and the
evaluator are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from dataset_recipes.commandline import run_command

from .._quiet import d3rlpy_warnings_only
from .adapt import cmd_adapt
from .common import (
    MODEL_FILE,
    PROG,
    RUN_FILE,
    CliError,
    infer_preset,
    load_minari,
    load_model,
    parse_overrides,
)
from .evaluate import cmd_evaluate, run_evaluation
from .info import cmd_info, describe_model
from .parser import build_parser
from .train import cmd_train

__all__ = [
    "MODEL_FILE",
    "RUN_FILE",
    "CliError",
    "build_parser",
    "describe_model",
    "infer_preset",
    "load_minari",
    "load_model",
    "main",
    "parse_overrides",
    "run_evaluation",
]

_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "info": cmd_info,
    "adapt": cmd_adapt,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted,
    143 terminated)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["benchmark"]:
        from ..benchmark import main as benchmark_main

        return benchmark_main(words[1:], prog=f"{PROG} benchmark")
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else ["harmodt", *argv]
    out = Console()

    def command() -> int:
        if args.verbose:  # d3rlpy as configured: every level, its own stream
            return _COMMANDS[args.command](args, out)
        with d3rlpy_warnings_only(sys.stderr):  # stdout holds tables or JSON
            return _COMMANDS[args.command](args, out)

    # ValueError covers DatasetError and RecipeError; OSError FileNotFoundError
    usage_errors = (CliError, ValueError, OSError, pickle.UnpicklingError, EOFError)
    return run_command(PROG, command, usage_errors)
