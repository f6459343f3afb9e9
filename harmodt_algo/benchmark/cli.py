"""``python -m harmodt_algo.benchmark run | report | list`` (``harmodt
benchmark ...`` delegates here): arguments in, exit codes out, so the harness
itself stays a library."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from dataset_recipes.commandline import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OneLineParser,
    run_command,
)

from ..baselines import BASELINES
from ..checkpoints import TrainingStopped
from ..files import folder_problem
from ..harmodt import PRESETS
from ..options import OptionError, parse_list, parse_value
from .cells import BenchmarkSettings
from .datasets import parse_dataset
from .errors import BenchmarkError
from .matrix import run_matrix
from .methods import (
    HARMODT_METHODS,
    METHOD_LABELS,
    METHODS,
    check_methods,
    method_options,
    option_default,
)
from .reporting import report
from .unseen import HeldOut, parse_adapt

__all__ = [
    "EXIT_FAILED_CELLS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "build_parser",
    "main",
    "parse_overrides",
]

EXIT_FAILED_CELLS = EXIT_FAILED
PROG = "python -m harmodt_algo.benchmark"


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in parse_list("--seeds", text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints, got {text!r}"
        ) from None


def _add_matrix_arguments(run: argparse.ArgumentParser) -> None:
    """What ``run`` computes: methods, datasets, seeds, budget, evaluation."""
    run.add_argument(
        "--methods",
        required=True,
        help=f"comma-separated, or 'all': {', '.join(METHODS)}",
    )
    run.add_argument(
        "--datasets",
        required=True,
        help="comma-separated dataset ids (metaworld-v3/mt5/near-optimal-v0) or "
        "SUITE:quality pairs (MT5:near-optimal; task lists as "
        "reach-v3+push-v3:expert), which are built with the recipes when missing",
    )
    run.add_argument("--seeds", type=_int_list, default=[0], help="e.g. 0,1,2")
    run.add_argument("--steps", type=int, required=True, help="gradient steps per cell")
    run.add_argument("--out", default="results", help="results folder")
    run.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    run.add_argument(
        "--eval-episodes", type=int, default=10, help="per task (default: 10)"
    )
    run.add_argument("--eval-seed", type=int, default=0, help="held-out goal draw")
    run.add_argument("--eval-max-steps", type=int, help="cut evaluation episodes")
    run.add_argument(
        "--eval-stop-on-success",
        action="store_true",
        help="end an evaluation episode at its first success (the same success "
        "rate in fewer env steps; returns are of the shortened episodes)",
    )
    run.add_argument("--eval-workers", type=int, default=0, help="env processes")
    run.add_argument(
        "--target-return",
        type=float,
        help="DT target return for every task (default: the task's best in the data)",
    )


def _add_held_out_arguments(run: argparse.ArgumentParser) -> None:
    """The held-out protocol (:mod:`.unseen`): unseen tasks after training."""
    run.add_argument(
        "--held-out",
        metavar="DATASET",
        help="also adapt each trained model to this dataset's tasks (unseen: "
        "disjoint from the training tasks; the forms of --datasets, e.g. "
        "ML10-TEST:sub-optimal, built like them) from its first --demos "
        "episodes per task, and evaluate them with the same settings",
    )
    run.add_argument(
        "--adapt",
        metavar="METHODS",
        help="with --held-out: how the HarmoDT presets add a task "
        "(vote, tune, prompt, zero-shot, finetune; default: vote,tune); MTDT is "
        "always zero-shot, Prompt-DT prompt, d3rlpy's one-hot baselines not "
        "applicable",
    )
    run.add_argument(
        "--demos",
        type=int,
        metavar="K",
        help="with --held-out: demonstrations per task, its first K episodes (5)",
    )
    run.add_argument(
        "--vote-threshold",
        type=float,
        metavar="F",
        help="with --held-out: vote/tune mask threshold in (0, 1] (0.5)",
    )
    run.add_argument(
        "--tune-steps",
        type=int,
        metavar="N",
        help="with --held-out: Adam steps of tune (the new prompt) and finetune "
        "(every weight, per task) (300)",
    )


def _held_out(args: argparse.Namespace) -> HeldOut | None:
    """``--held-out`` and its options (which need it) as settings."""
    given = {
        "--adapt": args.adapt,
        "--demos": args.demos,
        "--vote-threshold": args.vote_threshold,
        "--tune-steps": args.tune_steps,
    }
    if args.held_out is None:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise BenchmarkError(f"{', '.join(stray)} need(s) --held-out DATASET")
        return None
    options: dict[str, Any] = {
        "adapt": None if args.adapt is None else parse_adapt(args.adapt),
        "demos": args.demos,
        "threshold": args.vote_threshold,
        "tune_steps": args.tune_steps,
    }
    given_options = {k: v for k, v in options.items() if v is not None}
    return HeldOut(parse_dataset(args.held_out), **given_options)


def _add_run_options(run: argparse.ArgumentParser) -> None:
    """How ``run`` goes about it: data building, options, resuming, output."""
    run.add_argument(
        "--episodes-per-task",
        type=int,
        default=100,
        help="episodes per task when the harness builds a dataset (default: 100)",
    )
    run.add_argument("--recipe-seed", type=int, default=0, help="recipe seed")
    run.add_argument(
        "--build-missing",
        action="store_true",
        help="build missing recipe dataset ids with the recipes",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[METHOD.]KEY=VALUE",
        help="config option for one method (mtbc.batch_size=64) or for every "
        "selected method that has it (embed_size=64); JSON values",
    )
    run.add_argument("--overwrite", action="store_true", help="recompute every cell")
    run.add_argument("--fail-fast", action="store_true", help="stop at a failing cell")
    run.add_argument(
        "--save-models", action="store_true", help="also save seed<k>.d3 models"
    )
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument(
        "--curve-every",
        type=int,
        help="HarmoDT presets: also evaluate every N steps and at the last step "
        "(a learning curve; the report adds the HarmoDT release's protocol, the "
        "best of these evaluations, beside the final checkpoint's)",
    )
    run.add_argument(
        "--curve-episodes",
        type=int,
        metavar="N",
        help="with --curve-every: goals per task of each curve evaluation, the "
        "first N of the final evaluation's goal draw (default: --eval-episodes); "
        "e.g. "
        "--curve-every 5000 --curve-episodes 10 --eval-episodes 50 runs the "
        "release's protocol and Meta-World's in one cell",
    )
    run.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        metavar="N",
        help="HarmoDT presets: checkpoint every N steps (hidden, next to the "
        "cell) so that a stopped cell resumes there; 0: off (default: 1000). "
        "Baselines are short and restart from scratch",
    )
    run.add_argument("--report", metavar="DIR", help="write the report here afterwards")
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show d3rlpy's log lines (debug included); default: warnings only",
    )
    # test-only: short recipe episodes
    run.add_argument("--max-episode-steps", type=int, help=argparse.SUPPRESS)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser (``prog`` lets another CLI embed it)."""
    parser = OneLineParser(
        prog=prog,
        description="Benchmark HarmoDT against multi-task baselines on recipe data.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser
    )
    run = sub.add_parser(
        "run", help="run (or resume) a methods x datasets x seeds matrix"
    )
    _add_matrix_arguments(run)
    _add_held_out_arguments(run)
    _add_run_options(run)

    rep = sub.add_parser(
        "report", help="markdown table, CSVs and plots of a results folder"
    )
    rep.add_argument("results", help="results folder of 'run'")
    rep.add_argument("--out", default="docs/benchmarks", help="where to write")
    rep.add_argument("--no-plots", action="store_true", help="skip the PNG figures")

    sub.add_parser("list", help="the methods and what they are")
    return parser


def _override_targets(
    item: str, method: str, option: str, methods: Sequence[str]
) -> list[str]:
    """The selected methods a ``--set`` item applies to (its ``METHOD.``
    prefix, or every selected method that has the option)."""
    if method:
        method = check_methods([method])[0]
        if method not in methods:
            raise BenchmarkError(f"--set {item!r}: {method} is not among --methods")
        return [method]
    targets = [m for m in methods if option in method_options(m)]
    if not targets:
        raise BenchmarkError(
            f"--set {item!r}: no selected method has an option {option!r}"
        )
    return targets


def parse_overrides(
    items: Sequence[str], methods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``[METHOD.]KEY=VALUE`` items → per-method overrides (unprefixed keys go
    to every selected method that has that option)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item:
            raise BenchmarkError(f"--set {item!r}: expected [METHOD.]KEY=VALUE")
        key, raw = item.split("=", 1)
        key = key.strip()
        method, _, option = key.rpartition(".")
        for target in _override_targets(item, method, option, methods):
            if option not in method_options(target):
                raise BenchmarkError(
                    f"--set {item!r}: {target} has no option {option!r}; valid: "
                    f"{', '.join(sorted(method_options(target)))}"
                )
            try:
                value = parse_value(option, raw, option_default(target, option))
            except OptionError as exc:
                raise BenchmarkError(f"--set {item!r}: {target}: {exc}") from None
            out.setdefault(target, {})[option] = value
    return out


def _settings(args: argparse.Namespace, methods: Sequence[str]) -> BenchmarkSettings:
    """The ``run`` arguments every cell shares: each option of the same name
    as a :class:`BenchmarkSettings` field, and the two that need parsing."""
    parsed: dict[str, Any] = {
        "overrides": parse_overrides(args.set, methods),
        "held_out": _held_out(args),
    }
    return BenchmarkSettings(
        **{
            field.name: parsed[field.name]
            if field.name in parsed
            else getattr(args, field.name)
            for field in dataclasses.fields(BenchmarkSettings)
        }
    )


def _cmd_run(args: argparse.Namespace, prog: str) -> int:
    methods = check_methods(args.methods)
    if args.report:  # written after hours of work: checked before it
        problem = folder_problem(args.report)
        if problem is not None:
            raise BenchmarkError(f"--report {args.report!r} {problem}")
    try:
        datasets = parse_list("--datasets", args.datasets)
    except OptionError as exc:
        raise BenchmarkError(str(exc)) from None
    try:
        summary = run_matrix(
            methods,
            datasets,
            args.seeds,
            args.out,
            _settings(args, methods),
            build_missing=args.build_missing,
            episodes_per_task=args.episodes_per_task,
            recipe_seed=args.recipe_seed,
            max_episode_steps=args.max_episode_steps,
            overwrite=args.overwrite,
            fail_fast=args.fail_fast,
            quiet=not args.verbose,
        )
    except TrainingStopped as stopped:  # SIGINT/SIGTERM in a HarmoDT cell
        print(
            f"{prog}: stopped after step {stopped.step} (checkpoint written); "
            "finished cells and the partial cell are kept, rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        return 128 + stopped.signum  # 130 for SIGINT, 143 for SIGTERM
    if args.report:
        for path in report(args.out, args.report):
            print(f"wrote {path}")
    return EXIT_OK if summary.ok else EXIT_FAILED_CELLS


def _cmd_report(args: argparse.Namespace) -> int:
    for path in report(args.results, args.out, plots=not args.no_plots):
        print(f"wrote {path}")
    return EXIT_OK


def _cmd_list() -> int:
    for name in HARMODT_METHODS:
        options = PRESETS[name]
        print(f"{name:12s} {METHOD_LABELS[name]:14s} HarmoDT preset {options}")
    for name, spec in BASELINES.items():
        print(f"{name:12s} {spec.label:14s} {spec.description}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point; returns the exit code (0 ok, 1 some cells failed, 2 bad
    input, 130/143 interrupted/terminated: finished cells and a HarmoDT cell's
    checkpoints are kept, rerun to resume)."""
    args = build_parser(prog).parse_args(argv)
    commands = {
        "run": lambda: _cmd_run(args, prog),
        "report": lambda: _cmd_report(args),
        "list": _cmd_list,
    }
    return run_command(
        prog,
        commands[args.command],
        (ValueError,),  # BenchmarkError, RecipeError, DatasetError
        resume_hint="; finished cells (and a HarmoDT cell's last checkpoint) "
        "are kept, rerun to resume",
    )
