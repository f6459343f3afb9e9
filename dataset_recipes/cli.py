"""Command line: ``harmodt-recipes`` / ``python -m dataset_recipes``.

Why a thin layer: all logic lives in the library (:mod:`dataset_recipes.builder`)
so notebooks and the algorithm side get the same behaviour. The CLI only parses
arguments, turns :class:`RecipeError` into one line on stderr with exit code 2
(no traceback), and prints the result with rich.

Subcommands::

    harmodt-recipes metaworld --suite MT10 --quality near-optimal \
        --episodes-per-task 100 --workers 2 --seed 0
    harmodt-recipes metaworld --suite MT5 --quality replay \
        --env-steps-per-task 200000 --workers 2
    harmodt-recipes show metaworld-v3/mt10/near-optimal-v0
    harmodt-recipes list
    harmodt-recipes calibrate --suite MT10 --quality sub-optimal --episodes-per-task 10
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from .commandline import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    OneLineParser,
    Terminated,
    run_command,
    say,
)
from .errors import BuildInterrupted, RecipeError
from .qualities import QUALITIES, QUALITY_NAMES, REPLAY_QUALITY
from .suites import SUITE_NAMES, all_tasks, list_suites

PROG = "harmodt-recipes"


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Build Minari datasets of Meta-World v3 and of Prompt-DT's "
        "MuJoCo benchmarks.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser
    )

    def add_recipe_args(p: argparse.ArgumentParser, episodes_default: int) -> None:
        p.add_argument("--suite", help=f"one of {', '.join(SUITE_NAMES)}")
        p.add_argument(
            "--tasks", help="comma-separated task names (a subset, or MT1's task)"
        )
        p.add_argument(
            "--quality",
            default="near-optimal",
            help=f"one of {', '.join(QUALITY_NAMES)}, or {REPLAY_QUALITY} (a SAC "
            "learner's replay buffer; metaworld only) (default: near-optimal)",
        )
        p.add_argument(
            "--episodes-per-task",
            type=int,
            default=None,
            help=f"episodes per task (default: {episodes_default}; not with "
            f"--quality {REPLAY_QUALITY})",
        )
        p.set_defaults(episodes_default=episodes_default)
        p.add_argument("--seed", type=int, default=0, help="recipe seed (default: 0)")
        p.add_argument(
            "--workers", type=int, default=1, help="worker processes (default: 1)"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        # Test-only: short episodes.
        p.add_argument(
            "--max-episode-steps", type=int, default=500, help=argparse.SUPPRESS
        )

    build = sub.add_parser(
        "metaworld", help="build a Meta-World v3 dataset (resumable)"
    )
    add_recipe_args(build, 100)
    build.add_argument(
        "--env-steps-per-task",
        type=int,
        default=None,
        help="the SAC learner's budget per task, with --quality replay (default: "
        "200000, a multiple of 500)",
    )
    build.add_argument("--dataset-id", help="override the default dataset id")
    build.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset"
    )
    build.add_argument("--author", help="Minari 'author' metadata")
    build.add_argument("--code-permalink", help="Minari 'code_permalink' metadata")
    # Test-only hooks.
    build.add_argument("--chunk-episodes", type=int, default=10, help=argparse.SUPPRESS)
    build.add_argument("--stop-after-chunks", type=int, help=argparse.SUPPRESS)
    build.add_argument(
        "--sac",
        metavar="JSON",
        help="with --quality replay: SAC settings to change, as a JSON object, "
        "e.g. '{\"batch_size\": 128}' (default: d3rlpy's SACConfig defaults)",
    )

    mujoco = sub.add_parser(
        "mujoco",
        help="build Prompt-DT's unseen-task benchmarks: expert and replay data "
        "of a SAC learner per task (resumable)",
    )
    mujoco.add_argument(
        "--benchmark", required=True, help="cheetah-vel, cheetah-dir or ant-dir"
    )
    mujoco.add_argument(
        "--env-steps-per-task",
        type=int,
        help="each learner's budget, a multiple of 200 (default: 35000 for "
        "cheetah-vel, 100000 for cheetah-dir and ant-dir)",
    )
    mujoco.add_argument(
        "--expert-episodes",
        type=int,
        default=20,
        help="rollouts of each task's final policy (default: 20)",
    )
    mujoco.add_argument(
        "--train-tasks",
        type=int,
        help="build only the first N training tasks (default: all)",
    )
    mujoco.add_argument("--seed", type=int, default=0, help="recipe seed (default: 0)")
    mujoco.add_argument(
        "--workers", type=int, default=1, help="learners at once (default: 1)"
    )
    mujoco.add_argument(
        "--overwrite", action="store_true", help="replace existing datasets"
    )
    mujoco.add_argument("--sac", metavar="JSON", help="SAC settings to change (JSON)")
    mujoco.add_argument("--no-progress", action="store_true", help="no progress bar")
    mujoco.add_argument(
        "--chunk-episodes", type=int, default=10, help=argparse.SUPPRESS
    )

    show = sub.add_parser("show", help="print the card of a local recipe dataset")
    show.add_argument("dataset_id")

    sub.add_parser("list", help="list suites, tasks and quality levels")

    cal = sub.add_parser(
        "calibrate", help="measure a quality level's success without writing data"
    )
    add_recipe_args(cal, 10)
    return parser


def _episodes(args: argparse.Namespace) -> int:
    """--episodes-per-task, which the replay quality does not take."""
    if args.quality == REPLAY_QUALITY:
        if args.episodes_per_task is not None:
            raise RecipeError(
                f"--episodes-per-task does not apply to --quality {REPLAY_QUALITY}: "
                "the learner's budget is --env-steps-per-task"
            )
        raise RecipeError(
            f"--quality {REPLAY_QUALITY} is built by 'harmodt-recipes metaworld' only"
        )
    for option in ("env_steps_per_task", "sac"):
        if getattr(args, option, None) is not None:
            raise RecipeError(
                f"--{option.replace('_', '-')} applies to --quality "
                f"{REPLAY_QUALITY} only; --quality {args.quality} takes "
                "--episodes-per-task"
            )
    if args.episodes_per_task is None:
        return int(args.episodes_default)
    return int(args.episodes_per_task)


def _build_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``metaworld`` options every kind of build takes, as keywords."""
    options: dict[str, Any] = {
        "suite": args.suite,
        "tasks": args.tasks,
        "seed": args.seed,
        "workers": args.workers,
        "overwrite": args.overwrite,
        "max_episode_steps": args.max_episode_steps,
        "chunk_episodes": args.chunk_episodes,
        "progress": not args.no_progress,
    }
    if args.author:
        options["author"] = args.author
    if args.code_permalink:
        options["code_permalink"] = args.code_permalink
    return options


def _cmd_replay(args: argparse.Namespace, out: Console) -> int:
    from .replay import SACSettings
    from .replay_build import DEFAULT_ENV_STEPS_PER_TASK, build_replay_datasets

    if args.episodes_per_task is not None:
        _episodes(args)  # raises: the option does not apply
    for option, value in (("--dataset-id", args.dataset_id),):
        if value is not None:
            raise RecipeError(
                f"{option} does not apply to --quality {REPLAY_QUALITY}: one build "
                "writes two datasets, near-optimal-replay and sub-optimal-replay"
            )
    if args.stop_after_chunks is not None:
        raise RecipeError("--stop-after-chunks does not apply to --quality replay")
    kwargs = _build_options(args)
    if args.sac is not None:
        kwargs["sac"] = SACSettings.from_json(args.sac)
    steps = args.env_steps_per_task
    result = build_replay_datasets(
        env_steps_per_task=DEFAULT_ENV_STEPS_PER_TASK if steps is None else steps,
        **kwargs,
    )
    from .card import print_card

    for ds in result.datasets:
        out.print(Markdown(f"# {ds.dataset_id}"))
        print_card(out, ds.card, list(ds.stats), None)
        say(out, f"path: {ds.path}")
    _say_learners_cost(out, len(result.tasks), result.env_steps_per_task, result)
    return 0


def _say_learners_cost(out: Console, learners: int, steps: int, result: Any) -> None:
    """What SAC learners cost: ``result`` has ``cpu_seconds`` and ``seconds``."""
    say(
        out,
        f"{learners} learner(s), {steps:,} env steps each: "
        f"{result.cpu_seconds / 3600:.2f} CPU-hours, {result.seconds:.1f} s",
    )


def _cmd_metaworld(args: argparse.Namespace, out: Console) -> int:
    from . import builder

    if args.quality == REPLAY_QUALITY:
        return _cmd_replay(args, out)
    result = builder.build_metaworld_dataset(
        quality=args.quality,
        episodes_per_task=_episodes(args),
        dataset_id=args.dataset_id,
        stop_after_chunks=args.stop_after_chunks,
        command=None,
        **_build_options(args),
    )
    from .card import print_card

    print_card(out, result.card, list(result.stats), result.success_band)
    say(out, f"dataset id: {result.dataset_id}")
    say(out, f"path: {result.path}")
    say(
        out,
        f"{result.transitions:,} transitions in {result.seconds:.1f} s "
        f"({result.generated_chunks} chunks generated, {result.reused_chunks} "
        "reused from staging)",
    )
    return 0


def _cmd_mujoco(args: argparse.Namespace, out: Console) -> int:
    from .mujoco_build import DEFAULT_ENV_STEPS, build_mujoco_datasets
    from .replay import SACSettings

    steps = args.env_steps_per_task
    if steps is None:
        steps = DEFAULT_ENV_STEPS.get(args.benchmark, 0)  # unknown: refused below
    result = build_mujoco_datasets(
        args.benchmark,
        steps,
        expert_episodes=args.expert_episodes,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        chunk_episodes=args.chunk_episodes,
        sac=None if args.sac is None else SACSettings.from_json(args.sac),
        train_tasks=args.train_tasks,
        progress=not args.no_progress,
    )
    for (kind, split), path in result.datasets.items():
        say(out, f"{kind} {split}: {path}")
    _say_learners_cost(out, len(result.expert_returns), steps, result)
    return 0


def _cmd_show(args: argparse.Namespace, out: Console) -> int:
    import minari

    from . import schema
    from .minari_store import datasets_root

    try:
        ds = minari.load_dataset(args.dataset_id)
    except (FileNotFoundError, ValueError):
        local = sorted(
            i for i in minari.list_local_datasets() if i.startswith(schema.NAMESPACE)
        )
        raise RecipeError(
            f"no local dataset {args.dataset_id!r} under {datasets_root()}; "
            f"local recipe datasets: {', '.join(local) or 'none'}"
        ) from None
    from .builder import stats_of
    from .card import print_card

    meta = ds.storage.metadata
    band = (meta.get(schema.METADATA_RECIPE) or {}).get("success_band")
    out.print(Markdown(f"# {args.dataset_id}"))
    print_card(
        out,
        str(meta.get("description", "")),
        stats_of(meta),
        tuple(band) if band else None,
    )
    say(out, f"dataset id: {args.dataset_id}")
    say(out, f"path: {ds.storage.data_path.parent}")
    return 0


def _cmd_list(out: Console) -> int:
    table = Table(title="suites")
    table.add_column("suite")
    table.add_column("tasks", justify="right")
    table.add_column("task names")
    table.add_row("MT1", "1", "any one task, via --tasks")
    for name, tasks in list_suites().items():
        table.add_row(name, str(len(tasks)), ", ".join(tasks))
    out.print(table)
    qt = Table(title="quality levels")
    qt.add_column("quality")
    qt.add_column("mixture")
    for q in QUALITIES.values():
        qt.add_row(q.name, q.describe())
    qt.add_row(
        REPLAY_QUALITY,
        "**replay**: d3rlpy's SAC trained online per task, every episode it "
        "collected recorded in order (budget: --env-steps-per-task); writes "
        "near-optimal-replay (every episode) and sub-optimal-replay (each "
        "task's first half).",
    )
    out.print(qt)
    out.print(f"{len(all_tasks())} tasks in all.")
    return 0


def _cmd_calibrate(args: argparse.Namespace, out: Console) -> int:
    from .builder import measure_quality
    from .card import stats_table

    stats = measure_quality(
        suite=args.suite,
        tasks=args.tasks,
        quality=args.quality,
        episodes_per_task=_episodes(args),
        seed=args.seed,
        workers=args.workers,
        max_episode_steps=args.max_episode_steps,
        progress=not args.no_progress,
    )
    band = QUALITIES[args.quality].success_band
    out.print(stats_table(stats, band, title=f"{args.quality} (measured)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted,
    143 terminated)."""
    args = _build_parser().parse_args(argv)
    out = Console()

    def command() -> int:
        try:
            if args.command == "metaworld":
                return _cmd_metaworld(args, out)
            if args.command == "mujoco":
                return _cmd_mujoco(args, out)
            if args.command == "show":
                return _cmd_show(args, out)
            if args.command == "list":
                return _cmd_list(out)
            if args.command == "calibrate":
                return _cmd_calibrate(args, out)
        except BuildInterrupted as exc:  # its message says how to resume
            print(f"{PROG}: {exc}", file=sys.stderr)
            stopped_by_term = isinstance(exc.__cause__, Terminated)
            return EXIT_TERMINATED if stopped_by_term else EXIT_INTERRUPTED
        raise AssertionError(args.command)  # pragma: no cover

    return run_command(PROG, command, (RecipeError,))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
