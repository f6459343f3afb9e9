"""The ``harmodt`` argument parser: one function per command, each with the
examples its ``--help`` ends with (a researcher copies those first)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

from dataset_recipes.commandline import OneLineParser

from .common import LOGGERS, PROG

__all__ = [
    "ADAPT_EXAMPLES",
    "EVALUATE_EXAMPLES",
    "INFO_EXAMPLES",
    "TRAIN_EXAMPLES",
    "build_parser",
]

TRAIN_EXAMPLES = """\
Examples:
  # build the data once, then train HarmoDT-F on MT5 with 4 evaluations
  harmodt-recipes metaworld --suite MT5 --quality near-optimal
  harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 --preset harmodt-f \\
      --steps 20000 --eval-every 5000 --logdir runs

  # the MTDT baseline, smaller model, TensorBoard logs too
  harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 --preset mtdt \\
      --embed-size 64 --layers 2 --logger both --name mtdt-small

  # any HarmoDTConfig field with --set (repeatable)
  harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 \\
      --set sparsity=0.3 --set mask_interval=1000

Writes <logdir>/<name>_<timestamp>/: d3rlpy's logs (<metric>.csv, params.json,
model_<step>.d3), model.d3 (the final model), run.json and the plots.
"""

EVALUATE_EXAMPLES = """\
Examples:
  harmodt evaluate runs/harmodt-f_mt5_near-optimal_20250101120000/model.d3 --episodes 10
  harmodt evaluate runs/<run>/model.d3 --episodes 50 --workers 2 --json > res.json
  harmodt evaluate model.d3 --dataset metaworld-v3/mt5/near-optimal-v0 \\
      --tasks reach-v3,push-v3 --target-return 4500

The evaluation environments (held-out goals) come from the recipe dataset the
model was trained on: --dataset, else the dataset id in run.json next to the model.
"""

ADAPT_EXAMPLES = """\
examples:
  harmodt-recipes metaworld --suite ML10-test --quality near-optimal \\
      --episodes-per-task 5
  harmodt adapt runs/<run>/model.d3 \\
      --dataset metaworld-v3/ml10-test/near-optimal-v0 --method tune
  harmodt evaluate runs/<run>/model-tune.d3 \\
      --dataset metaworld-v3/ml10-test/near-optimal-v0   # the new tasks
"""

INFO_EXAMPLES = """\
Examples:
  harmodt info runs/harmodt-f_mt5_near-optimal_20250101120000/model.d3
  harmodt info runs/<run>/model.d3 --json | jq .mask_overlap
"""

if TYPE_CHECKING:  # pragma: no cover
    #: what ``add_subparsers`` returns: each ``_add_<command>`` adds one to it
    _Commands: TypeAlias = argparse._SubParsersAction[OneLineParser]

_RAW = argparse.RawDescriptionHelpFormatter


#: The model argument of evaluate, info and adapt.
_MODEL_HELP = "a HarmoDT model file (model.safetensors, or model.d3)"


def build_parser() -> argparse.ArgumentParser:
    """``harmodt {train,evaluate,info,adapt,benchmark}``; ``benchmark`` is only
    a name here (``main`` hands the rest of its line to the harness)."""
    parser = OneLineParser(
        prog=PROG,
        description="Train, evaluate and inspect HarmoDT multi-task Decision "
        "Transformers on Meta-World recipe datasets.",
        epilog=(
            "Examples:\n"
            "  harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 "
            "--steps 20000 --eval-every 5000\n"
            "  harmodt evaluate runs/<run>/model.d3 --episodes 10\n"
            "  harmodt info runs/<run>/model.d3\n"
            "  harmodt benchmark run --methods harmodt-f,mtdt,mtbc "
            "--datasets metaworld-v3/mt5/near-optimal-v0 --seeds 0,1,2\n\n"
            "Run 'harmodt <command> --help' for a command's options."
        ),
        formatter_class=_RAW,
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{train,evaluate,info,adapt,benchmark}",
    )
    # parsed by harmodt_algo.benchmark (main() hands it the rest of the line)
    sub.add_parser(
        "benchmark",
        help="compare methods x datasets x seeds (run, report, list)",
        add_help=False,
    )
    _add_train(sub)
    _add_evaluate(sub)
    _add_info(sub)
    _add_adapt(sub)
    for name, command in sub.choices.items():
        if name != "benchmark":  # the harness has its own --verbose
            add_verbose(command)
    return parser


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v``: d3rlpy's own log lines (debug included), which every command
    otherwise hides except warnings and errors."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show d3rlpy's log lines (debug included); default: warnings only",
    )


def _add_train(sub: _Commands) -> None:
    """``train``: what to train on and for how long; then the model overrides
    and where the run goes (help lists them in this order)."""
    from ..harmodt import PRESETS

    train = sub.add_parser(
        "train",
        help="train on a Minari dataset, evaluating every --eval-every steps",
        description="Train HarmoDT (or a baseline preset) on a multi-task Minari "
        "dataset.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=_RAW,
    )
    train.add_argument(
        "--dataset", help="Minari dataset id (a harmodt-recipes id); required"
    )
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its newest checkpoint, with its "
        "original command (the final model equals an uninterrupted run's)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="write a resumable checkpoint every this many steps (default: "
        "1000; a stop request writes one too)",
    )
    train.add_argument(
        "--preset",
        default="harmodt-f",
        help=f"one of {', '.join(PRESETS)} (default: harmodt-f)",
    )
    train.add_argument(
        "--steps", type=int, default=10000, help="gradient steps (default: 10000)"
    )
    _add_train_evaluation(train)
    _add_model_overrides(train)
    _add_train_output(train)


def _add_train_evaluation(train: argparse.ArgumentParser) -> None:
    """How often and how thoroughly ``train`` evaluates."""
    train.add_argument(
        "--eval-every",
        type=int,
        help="steps per epoch: evaluate and log every this many steps "
        "(default: steps/5)",
    )
    train.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="episodes per task at each evaluation, each on a different held-out "
        "goal (default: 10; 0 = do not evaluate)",
    )
    train.add_argument(
        "--eval-workers",
        type=int,
        default=0,
        help="processes stepping the evaluation envs (default: 0 = in-process)",
    )
    train.add_argument(
        "--target-return",
        type=float,
        help="initial return-to-go for every task (default: each task's best "
        "return in the dataset)",
    )


def _add_model_overrides(train: argparse.ArgumentParser) -> None:
    """The preset's settings a flag can change; ``--set`` reaches the rest."""
    group = train.add_argument_group("model overrides (default: the preset's)")
    group.add_argument("--batch-size", type=int, help="sequences per batch")
    group.add_argument("--embed-size", type=int, help="transformer width")
    group.add_argument("--layers", type=int, help="transformer blocks")
    group.add_argument("--heads", type=int, help="attention heads")
    group.add_argument("--context", type=int, help="context length K (steps)")
    group.add_argument("--seed", type=int, help="training seed (config.seed)")
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any HarmoDTConfig field of type int/float/bool/str (repeatable)",
    )


def _add_train_output(train: argparse.ArgumentParser) -> None:
    """Where ``train`` runs and what it writes and shows."""
    train.add_argument(
        "--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)"
    )
    train.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: torch's choice); 1 keeps a run from "
        "collapsing when other work shares a small machine",
    )
    train.add_argument(
        "--logger",
        choices=LOGGERS,
        default="file",
        help="d3rlpy logger: CSV files, TensorBoard (under the run directory), "
        "both, or none (default: file)",
    )
    train.add_argument(
        "--logdir", default="runs", help="root of run directories (default: runs)"
    )
    train.add_argument(
        "--name", help="run name (default: <preset>_<dataset>); a timestamp is added"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--no-plots", action="store_true", help="do not draw the PNG figures"
    )


def _model_command(
    sub: _Commands,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
    model_help: str = "a model file saved by HarmoDT (model.safetensors or model.d3)",
) -> argparse.ArgumentParser:
    """A command that reads a model file: its parser, with the file and the
    one way to read pickled code."""
    parser = sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=_RAW
    )
    parser.add_argument("model", help=model_help)
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read a .d3 that holds more than data with d3rlpy's own unpickler, "
        "which runs code from the file: only for files from sources you trust",
    )
    return parser


def _add_evaluate(sub: _Commands) -> None:
    """``evaluate``: a saved model on its tasks' held-out goals."""
    evaluate = _model_command(
        sub,
        "evaluate",
        help="evaluate a saved model on every task",
        description="Evaluate a saved HarmoDT model on its tasks' held-out goals.",
        epilog=EVALUATE_EXAMPLES,
    )
    evaluate.add_argument(
        "--dataset", help="recipe dataset id (default: the one in run.json)"
    )
    evaluate.add_argument(
        "--episodes", type=int, default=10, help="episodes per task (default: 10)"
    )
    evaluate.add_argument(
        "--tasks", help="comma-separated subset of the model's tasks (default: all)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="picks the goals (default: 0)"
    )
    evaluate.add_argument(
        "--max-steps", type=int, help="cut episodes at this many steps"
    )
    evaluate.add_argument(
        "--target-return",
        type=float,
        help="initial return-to-go for every task (default: each task's best "
        "return in the dataset)",
    )
    evaluate.add_argument(
        "--workers", type=int, default=0, help="env processes (default: 0)"
    )
    evaluate.add_argument("--device", help="torch device (default: cpu)")
    evaluate.add_argument(
        "--json", action="store_true", help="print machine-readable JSON only"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_info(sub: _Commands) -> None:
    """``info``: a saved model described, as tables or JSON."""
    info = _model_command(
        sub,
        "info",
        help="tasks, config, parameters, mask densities and overlap of a model",
        description="Describe a saved HarmoDT model.",
        epilog=INFO_EXAMPLES,
    )
    info.add_argument("--json", action="store_true", help="print JSON only")


def _add_adapt(sub: _Commands) -> None:
    """``adapt``: unseen tasks added to a copy of a trained model."""
    adapt = _model_command(
        sub,
        "adapt",
        help="add unseen tasks to a trained model from a few demonstrations",
        description="Add every task of --dataset (e.g. a test split built with "
        "harmodt-recipes --suite ML10-test --episodes-per-task 5) to MODEL and "
        "write a new model file; MODEL is not changed.",
        epilog=ADAPT_EXAMPLES,
        model_help="a trained HarmoDT model file (.safetensors or .d3)",
    )
    adapt.add_argument("--dataset", required=True, help="the new tasks' demos")
    adapt.add_argument(
        "--method",
        default="vote",
        help="vote (default), tune, prompt (Prompt-DT), zero-shot (MTDT), "
        "finetune (every shared weight: the trained tasks may change; the tasks "
        "of --dataset are fine-tuned one after another)",
    )
    adapt.add_argument(
        "--threshold", type=float, default=0.5, help="vote: share of tasks (0, 1]"
    )
    adapt.add_argument(
        "--tune-steps",
        type=int,
        default=300,
        help="tune/finetune: Adam steps per task (300)",
    )
    adapt.add_argument(
        "--out", help="the new model file (default: <model>-<method>.d3 beside it)"
    )
    adapt.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file"
    )
