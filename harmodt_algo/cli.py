"""Command line: ``harmodt train | evaluate | info``.

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

minari, metaworld, matplotlib and the evaluator are imported inside the
commands that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import pickle
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from ._quiet import d3rlpy_warnings_only
from .checkpoints import CheckpointDir, StopRequest, TrainingStopped
from .files import write_json_atomic
from .options import OptionError, parse_device, parse_list, parse_value

if TYPE_CHECKING:  # pragma: no cover
    from .evaluation import EvaluationResult, MultiTaskEvaluator
    from .harmodt import HarmoDT, HarmoDTConfig

__all__ = ["main", "CliError", "RUN_FILE", "MODEL_FILE"]

PROG = "harmodt"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Written by ``train`` next to the model: how the run was made.
RUN_FILE = "run.json"
#: The final model of a ``train`` run.
MODEL_FILE = "model.d3"
LOGGERS = ("file", "tensorboard", "both", "none")
#: Config keys ``info`` shows (the ones a preset or a flag sets).
SUMMARY_KEYS = (
    "embed_size",
    "num_layers",
    "num_heads",
    "ff_size",
    "context_size",
    "max_timestep",
    "prompt_length",
    "mask_init",
    "sparsity",
    "mask_interval",
    "change_fraction",
    "change_schedule",
    "importance",
    "harmony_gamma",
    "task_schedule",
    "batch_size",
    "learning_rate",
    "seed",
)


class CliError(Exception):
    """Bad input found by the CLI itself; printed as one line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #

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


def _build_parser() -> argparse.ArgumentParser:
    from .harmodt import PRESETS

    parser = _Parser(
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    raw = argparse.RawDescriptionHelpFormatter

    # ------------------------------------------------------------------ train
    train = sub.add_parser(
        "train",
        help="train on a Minari dataset, evaluating every --eval-every steps",
        description="Train HarmoDT (or a baseline preset) on a multi-task Minari "
        "dataset.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=raw,
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
    train.add_argument(
        "--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)"
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

    # --------------------------------------------------------------- evaluate
    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a saved model on every task",
        description="Evaluate a saved HarmoDT model on its tasks' held-out goals.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=raw,
    )
    evaluate.add_argument("model", help="a .d3 file saved by HarmoDT (model.d3)")
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

    # ------------------------------------------------------------------- info
    info = sub.add_parser(
        "info",
        help="tasks, config, parameters, mask densities and overlap of a model",
        description="Describe a saved HarmoDT model.",
        epilog=INFO_EXAMPLES,
        formatter_class=raw,
    )
    info.add_argument("model", help="a .d3 file saved by HarmoDT (model.d3)")
    info.add_argument("--json", action="store_true", help="print JSON only")

    # ------------------------------------------------------------------ adapt
    adapt = sub.add_parser(
        "adapt",
        help="add unseen tasks to a trained model from a few demonstrations",
        description="Add every task of --dataset (e.g. a test split built with "
        "harmodt-recipes --suite ML10-test --episodes-per-task 5) to MODEL and "
        "write a new model file; MODEL is not changed.",
        epilog=ADAPT_EXAMPLES,
        formatter_class=raw,
    )
    adapt.add_argument("model", help="a trained HarmoDT .d3 file")
    adapt.add_argument("--dataset", required=True, help="the new tasks' demos")
    adapt.add_argument(
        "--method",
        default="vote",
        help="vote (default), tune, prompt (Prompt-DT), zero-shot (MTDT)",
    )
    adapt.add_argument(
        "--threshold", type=float, default=0.5, help="vote: share of tasks (0, 1]"
    )
    adapt.add_argument(
        "--tune-steps", type=int, default=300, help="tune: prompt steps (300)"
    )
    adapt.add_argument(
        "--out", help="the new model file (default: <model>-<method>.d3 beside it)"
    )
    return parser


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise CliError(f"{name} must be {bound}, got {value}")


def _parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` typed as the field's default (the shared option parser)."""
    try:
        return parse_value(key, text, default)
    except OptionError as exc:
        raise CliError(f"--set {exc}") from None


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed ``HarmoDTConfig`` overrides.

    Only fields whose default is a bool, int, float or str can be set from the
    command line (factories, scalers and the task list cannot).
    """
    from .harmodt import HarmoDTConfig

    defaults = HarmoDTConfig()
    settable = {
        f.name: getattr(defaults, f.name)
        for f in dataclasses.fields(HarmoDTConfig)
        if isinstance(getattr(defaults, f.name), (bool, int, float, str))
    }
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CliError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in settable:
            fields = {f.name for f in dataclasses.fields(HarmoDTConfig)}
            why = (
                "cannot be set from the command line"
                if key in fields
                else "is not a HarmoDTConfig field"
            )
            raise CliError(
                f"--set {key}: {why}; settable fields: {', '.join(sorted(settable))}"
            )
        out[key] = _parse_value(key, text, settable[key])
    return out


def _recipe_hint(dataset_id: str) -> str:
    """How to build ``dataset_id`` with ``harmodt-recipes`` (or a generic hint)."""
    from dataset_recipes import parse_dataset_id, schema

    generic = (
        "build a recipe dataset with e.g. 'harmodt-recipes metaworld --suite MT5 "
        "--quality near-optimal' (choices: 'harmodt-recipes list')"
    )
    recipe = parse_dataset_id(dataset_id)
    if recipe is None:
        if dataset_id.startswith(f"{schema.NAMESPACE}/"):
            return generic
        return f"{generic}, or fetch it with 'minari download {dataset_id}'"
    if recipe.suite is not None:
        args = f"--suite {recipe.suite}"
    elif recipe.task is not None:
        args = f"--suite MT1 --tasks {recipe.task}"
    elif recipe.group.startswith("custom-"):
        args = "--tasks <the same comma-separated task list>"
    else:
        return generic
    return (
        f"build it with 'harmodt-recipes metaworld {args} --quality {recipe.quality}'"
    )


def load_minari(dataset_id: str) -> Any:
    """The local Minari dataset ``dataset_id``; a missing one names the recipe."""
    import minari

    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        from dataset_recipes import datasets_root

        raise CliError(
            f"no local dataset {dataset_id!r} under {datasets_root()}; "
            f"{_recipe_hint(dataset_id)}"
        ) from None


def load_model(path: str | Path, device: str | None = None) -> HarmoDT:
    """A saved HarmoDT; anything else (missing, corrupt, another algorithm) is a
    :class:`CliError` that says which."""
    import harmodt_algo  # registers HarmoDTConfig before d3rlpy loads the file

    # isort: split
    import d3rlpy

    file = Path(path)
    if not file.exists():
        raise CliError(f"no model file {str(file)!r}")
    if not file.is_file():
        raise CliError(f"{str(file)!r} is not a file")
    torch_device = _device(device)  # a bad device is not a bad model file
    try:
        algo = d3rlpy.load_learnable(str(file), device=torch_device)
    except Exception as exc:  # pickle / torch / d3rlpy all fail differently
        reason = _first_sentence(f"{type(exc).__name__}: {exc}")
        raise CliError(
            f"{str(file)!r} is not a readable d3rlpy model file ({reason})"
        ) from None
    if not isinstance(algo, harmodt_algo.HarmoDT):
        raise CliError(
            f"{str(file)!r} is a d3rlpy {type(algo).__name__} model, not HarmoDT"
        )
    return algo


def _device(device: str | None) -> str | bool:
    try:
        return parse_device(device)
    except OptionError as exc:
        raise CliError(f"--device: {exc}") from None


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first sentence of an exception text (torch's pickle errors run to
    paragraphs); cut at a word boundary with an ellipsis if still too long."""
    line = text.strip().splitlines()[0] if text.strip() else text
    end = line.find(". ")
    if 0 <= end < limit:
        return line[: end + 1]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " …"


def _join_torchrun(device: str | bool) -> tuple[int, str | bool]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group the
    d3rlpy way (gloo on CPU, nccl on CUDA, one GPU per local rank) and return
    (rank, device); otherwise (-1, device) and nothing happens."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return -1, device
    import d3rlpy.distributed

    backend = "gloo"
    if device is not False:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        backend = "nccl"
    return d3rlpy.distributed.init_process_group(backend), device


def _read_run_file(model: Path) -> dict[str, Any]:
    """The ``run.json`` next to ``model`` (empty when there is none)."""
    path = model.parent / RUN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"{str(path)!r} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def infer_preset(config: HarmoDTConfig) -> str | None:
    """The most specific preset whose every override the config has."""
    from .harmodt import PRESETS

    best: tuple[int, str] | None = None
    for name, overrides in PRESETS.items():
        if all(getattr(config, k) == v for k, v in overrides.items()):
            if best is None or len(overrides) > best[0]:
                best = (len(overrides), name)
    return None if best is None else best[1]


class _ProgressPolicy:
    """Wraps a multi-task policy to advance a progress bar by the number of
    episodes that take a step (the evaluator has no progress hook)."""

    def __init__(self, inner: Any, advance: Callable[[int], None]) -> None:
        self._inner = inner
        self._advance = advance

    def reset(self, task_ids: Any, task_names: Sequence[str] | None = None) -> None:
        self._inner.reset(task_ids, task_names)

    def act(self, observations: Any, rewards: Any, task_ids: Any, active: Any) -> Any:
        actions = self._inner.act(observations, rewards, task_ids, active)
        self._advance(int(sum(bool(a) for a in active)))
        return actions


def _episode_limit(minari_dataset: Any) -> int | None:
    from dataset_recipes import schema

    env = dict(minari_dataset.storage.metadata).get(schema.METADATA_ENV) or {}
    limit = env.get("max_episode_steps") if isinstance(env, Mapping) else None
    return int(limit) if limit else None


def run_evaluation(
    evaluator: MultiTaskEvaluator,
    algo: HarmoDT,
    *,
    progress: bool,
    horizon: int | None,
    description: str = "evaluating",
) -> EvaluationResult:
    """``evaluator.evaluate(algo)``, with a progress bar (env steps) on stderr."""
    if not progress:
        return evaluator.evaluate(algo)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    steps = horizon if evaluator.max_steps is None else evaluator.max_steps
    total = len(evaluator.tasks) * evaluator.n_episodes * steps if steps else None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env steps"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        policy = _ProgressPolicy(
            evaluator.policy_for(algo), lambda n: bar.advance(task, n)
        )
        return evaluator.evaluate(policy)


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --------------------------------------------------------------------------- #
# train
# --------------------------------------------------------------------------- #


def _logger_factory(kind: str, root: Path, run_dir: Path) -> Any:
    from d3rlpy.logging import (
        CombineAdapterFactory,
        FileAdapterFactory,
        NoopAdapterFactory,
        TensorboardAdapterFactory,
    )

    def tensorboard() -> Any:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise CliError(
                "--logger tensorboard needs tensorboardX: "
                "pip install 'harmodt[tensorboard]'"
            ) from None
        # events under <run>/tensorboard/runs/<run name>
        return TensorboardAdapterFactory(root_dir=str(run_dir / "tensorboard"))

    if kind == "file":
        return FileAdapterFactory(root_dir=str(root))
    if kind == "tensorboard":
        return tensorboard()
    if kind == "both":
        return CombineAdapterFactory(
            [FileAdapterFactory(root_dir=str(root)), tensorboard()]
        )
    return NoopAdapterFactory()


def _default_name(preset: str, dataset_id: str) -> str:
    from dataset_recipes import parse_dataset_id

    recipe = parse_dataset_id(dataset_id)
    short = f"{recipe.group}_{recipe.quality}" if recipe else dataset_id
    return re.sub(r"[^-\w.]+", "-", f"{preset}_{short}").strip("-")


def _new_run_dir(root: Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    candidate = root / f"{name}_{stamp}"
    suffix = 1
    while candidate.exists():
        candidate = root / f"{name}_{stamp}-{suffix}"
        suffix += 1
    return candidate


def _resume_args(args: argparse.Namespace) -> tuple[Path, argparse.Namespace]:
    """The run directory and the original ``train`` arguments of ``--resume``."""
    run_dir = Path(args.resume)
    run_info = _read_run_file(run_dir / MODEL_FILE)
    command = run_info.get("command")
    if not isinstance(command, list) or command[1:2] != ["train"]:
        raise CliError(
            f"{str(run_dir)!r} is not a harmodt train run directory (no run.json "
            "with its command)"
        )
    if run_info.get("status") == "finished":
        raise CliError(f"the run in {str(run_dir)!r} has already finished")
    original = _build_parser().parse_args([str(w) for w in command[1:]])
    if original.resume:
        raise CliError(f"{str(run_dir)!r}: its command is itself a --resume")
    original.no_progress = original.no_progress or args.no_progress
    original.argv = command
    return run_dir, original


@dataclasses.dataclass
class _TrainPlan:
    """``harmodt train``'s arguments, checked and resolved (no I/O yet)."""

    args: argparse.Namespace
    resume_dir: Path | None
    preset: str
    overrides: dict[str, Any]
    steps: int
    eval_every: int
    device: str | bool

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.steps / self.eval_every)


def _train_plan(args: argparse.Namespace) -> _TrainPlan:
    """Everything cheap, checked before any data is loaded or file written."""
    from .harmodt import PRESETS

    resume_dir = None
    if args.resume:
        resume_dir, args = _resume_args(args)
    elif not args.dataset:
        raise CliError(
            "--dataset is required (or --resume RUN_DIR to continue a stopped run)"
        )
    _positive("--checkpoint-every", args.checkpoint_every)
    preset = args.preset.lower()
    if preset not in PRESETS:
        raise CliError(f"unknown preset {args.preset!r}; presets: {', '.join(PRESETS)}")
    _positive("--steps", args.steps)
    _positive("--eval-every", args.eval_every)
    _positive("--eval-episodes", args.eval_episodes, allow_zero=True)
    _positive("--eval-workers", args.eval_workers, allow_zero=True)
    flags = {
        "batch_size": args.batch_size,
        "embed_size": args.embed_size,
        "num_layers": args.layers,
        "num_heads": args.heads,
        "context_size": args.context,
        "seed": args.seed,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(parse_overrides(args.overrides))
    steps = int(args.steps)
    eval_every = min(int(args.eval_every or max(1, math.ceil(steps / 5))), steps)
    return _TrainPlan(
        args, resume_dir, preset, overrides, steps, eval_every, _device(args.device)
    )


def _open_run(
    plan: _TrainPlan, algo: HarmoDT, data: Any, out: Console
) -> tuple[Path, Path, CheckpointDir]:
    """(run directory, logger root, checkpoints): a new run directory, or the
    resumed one with its newest checkpoint loaded into ``algo``."""
    if plan.resume_dir is None:
        root = Path(plan.args.logdir)
        name = plan.args.name or _default_name(plan.preset, plan.args.dataset)
        run_dir = _new_run_dir(root, name)
        run_dir.mkdir(parents=True)
        return run_dir, root, CheckpointDir(run_dir / "checkpoints")
    checkpoints = CheckpointDir(plan.resume_dir / "checkpoints")
    algo.build_with_dataset(data)
    try:
        loaded = checkpoints.load_latest(algo)
    except FileNotFoundError as exc:
        raise CliError(f"cannot resume: {exc}") from None
    out.print(
        f"resuming {plan.resume_dir} from {loaded.name} (step {algo.grad_step})",
        highlight=False,
        soft_wrap=True,
    )
    return plan.resume_dir, plan.resume_dir.parent, checkpoints


def _run_info(
    plan: _TrainPlan, data: Any, algo: HarmoDT, run_dir: Path
) -> dict[str, Any]:
    """The ``run.json`` record of a new or resumed run."""
    import harmodt_algo

    args = plan.args
    now = _dt.datetime.now().isoformat(timespec="seconds")
    info: dict[str, Any] = {
        "dataset_id": args.dataset,
        "preset": plan.preset,
        "steps": plan.steps,
        "eval_every": plan.eval_every,
        "eval_episodes": args.eval_episodes,
        "overrides": plan.overrides,
        "tasks": list(data.task_names),
        "logger": args.logger,
        "model": MODEL_FILE,
        "status": "running",
        "started": now,
        "finished": None,
        "command": ["harmodt", *sys.argv[1:]] if args.argv is None else args.argv,
        "harmodt_version": harmodt_algo.__version__,
    }
    if plan.resume_dir is not None:
        previous = _read_run_file(run_dir / MODEL_FILE)
        info["started"] = previous.get("started", now)
        info["resumed"] = [
            *previous.get("resumed", []),
            {"at": now, "step": algo.grad_step},
        ]
    return info


def _train_worker(plan: _TrainPlan, algo: HarmoDT, data: Any) -> int:
    """A torchrun rank > 0: trains its slice of every batch; rank 0 writes."""
    import d3rlpy
    from d3rlpy.logging import NoopAdapterFactory

    if plan.resume_dir is not None:
        algo.build_with_dataset(data)
        CheckpointDir(plan.resume_dir / "checkpoints").load_latest(algo)
    algo.fit(
        data,
        n_steps=plan.steps - algo.grad_step,
        n_steps_per_epoch=plan.eval_every,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )
    d3rlpy.distributed.destroy_process_group()
    return EXIT_OK


def _cmd_train(args: argparse.Namespace, out: Console) -> int:
    plan = _train_plan(args)
    args = plan.args
    import harmodt_algo

    # isort: split
    import d3rlpy

    from .harmodt import HarmoDT, HarmoDTConfig

    config = HarmoDTConfig.from_preset(plan.preset, **plan.overrides)
    rank, device = _join_torchrun(plan.device)  # (-1, device) unless torchrun
    algo = HarmoDT(config, device=device, enable_ddp=rank >= 0)
    # config.seed drives sampling, dropout and masks; the weight init draws
    # from torch's global RNG, so seed that too: same flags, same run
    d3rlpy.seed(config.seed)
    minari_dataset = load_minari(args.dataset)
    data = harmodt_algo.as_multitask_dataset(minari_dataset)
    if rank > 0:
        return _train_worker(plan, algo, data)
    if data.max_episode_length > config.max_timestep:  # fit would fail later
        raise CliError(
            f"the dataset has episodes of {data.max_episode_length} steps but "
            f"max_timestep is {config.max_timestep}; pass --set "
            f"max_timestep={data.max_episode_length} (or more)"
        )
    evaluator = None
    if args.eval_episodes > 0:
        from .evaluation import MultiTaskEvaluator

        evaluator = MultiTaskEvaluator(
            minari_dataset,
            tasks=list(data.task_names),
            n_episodes=args.eval_episodes,
            seed=0,
            target_returns=data if args.target_return is None else args.target_return,
            workers=args.eval_workers,
        )
    run_dir, root, checkpoints = _open_run(plan, algo, data, out)
    run_info = _run_info(plan, data, algo, run_dir)
    write_json_atomic(run_dir / RUN_FILE, run_info)
    out.print(
        f"training {plan.preset} on {args.dataset} ({data.num_tasks} tasks): "
        f"{plan.steps} steps, {plan.n_epochs} epoch(s) of {plan.eval_every}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    history: list[dict[str, Any]] = []
    code = _fit_run(
        plan, algo, data, evaluator, _episode_limit(minari_dataset),
        (run_dir, root, checkpoints), run_info, history, out, rank,
    )  # fmt: skip
    if code != EXIT_OK:
        return code
    final = evaluator.last_result if evaluator is not None else None
    if final is not None:
        run_info["final"] = {
            "step": history[-1]["step"] if history else plan.steps,
            "success_mean": final.success_mean,
            "return_mean": final.return_mean,
            "tasks": {
                r.task: {"success_rate": r.success_rate, "mean_return": r.mean_return}
                for r in final.tasks
            },
        }
    write_json_atomic(run_dir / RUN_FILE, run_info)
    _report_run(plan, algo, run_dir, final, out)
    return EXIT_OK


def _fit_run(
    plan: _TrainPlan,
    algo: HarmoDT,
    data: Any,
    evaluator: Any,
    horizon: int | None,
    where: tuple[Path, Path, CheckpointDir],
    run_info: dict[str, Any],
    history: list[dict[str, Any]],
    out: Console,
    rank: int,
) -> int:
    """Train to the planned step with evaluations, periodic checkpoints and a
    polite stop; saves the model. Returns the exit code (130/143 if stopped)."""
    import d3rlpy

    run_dir, root, checkpoints = where
    show = not plan.args.no_progress
    every = int(plan.args.checkpoint_every)

    def evaluate_epoch(trained: HarmoDT) -> dict[str, float]:
        """fit's evaluator: runs at every epoch end, after the epoch's progress
        bar closed; fit logs the returned metrics through d3rlpy's logger."""
        step = trained.grad_step
        epoch = math.ceil(step / plan.eval_every)
        result = run_evaluation(
            evaluator,
            trained,
            progress=show,
            horizon=horizon,
            description=f"evaluating epoch {epoch}/{plan.n_epochs}",
        )
        history.append({"epoch": epoch, "step": step, **result.metrics()})
        out.print(
            f"epoch {epoch}/{plan.n_epochs} (step {step}): success "
            f"{100 * result.success_mean:.1f}%, return {result.return_mean:.1f} "
            f"({len(result.tasks)} tasks × {result.n_episodes} episodes, "
            f"{result.elapsed_s:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
        return result.metrics()

    def checkpoint(trained: HarmoDT, epoch: int, total_step: int) -> None:
        """After every step: a periodic checkpoint, or the stop request's."""
        if stop.requested or trained.grad_step % every == 0:
            checkpoints.save(trained)
        if stop.signum is not None:
            raise TrainingStopped(stop.signum, trained.grad_step)

    resume = f"harmodt train --resume {run_dir}"
    status, stopped_by = "failed", None
    try:
        with StopRequest() as stop:
            if algo.grad_step < plan.steps:
                algo.fit(
                    data,
                    n_steps=plan.steps - algo.grad_step,
                    n_steps_per_epoch=plan.eval_every,
                    experiment_name=run_dir.name,
                    with_timestamp=False,
                    logger_adapter=_logger_factory(plan.args.logger, root, run_dir),
                    show_progress=show,
                    callback=checkpoint,
                    evaluators={"multitask": evaluate_epoch} if evaluator else None,
                )
        algo.save(str(run_dir / MODEL_FILE))
        status = "finished"
        if rank == 0:  # the other ranks have left after their last step
            d3rlpy.distributed.destroy_process_group()
    except TrainingStopped as stopped:
        status, stopped_by = "interrupted", stopped.signum
        run_info["resume"] = resume
    except KeyboardInterrupt:  # a second signal: the last periodic checkpoint
        status = "interrupted"
        run_info["resume"] = resume
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
        run_info["status"] = status
        run_info["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        run_info["grad_steps"] = algo.grad_step
        if status != "finished":
            write_json_atomic(run_dir / RUN_FILE, run_info)
    if stopped_by is None:
        return EXIT_OK
    print(
        f"{PROG}: stopped after step {algo.grad_step} of {plan.steps} (checkpoint "
        f"written); continue with: {resume}",
        file=sys.stderr,
    )
    return 128 + stopped_by  # 130 for SIGINT, 143 for SIGTERM


def _report_run(
    plan: _TrainPlan, algo: HarmoDT, run_dir: Path, final: Any, out: Console
) -> None:
    """The end of ``harmodt train``: plots, the result table, where things are."""
    logger = plan.args.logger
    plots: list[Path] = []
    plot_note = ""
    if plan.args.no_plots:
        plot_note = "skipped (--no-plots)"
    elif logger in ("file", "both"):
        from .plots import PlotsUnavailable, plot_run

        try:
            plots = plot_run(run_dir)
        except PlotsUnavailable as exc:
            plot_note = str(exc)
        except (OSError, ValueError) as exc:
            plot_note = f"not drawn ({exc})"
    else:
        plot_note = "none (plots are drawn from the file logger's CSVs)"
    model_path = run_dir / MODEL_FILE
    if final is not None:
        out.print(final.table(title=f"{run_dir.name}: step {algo.grad_step}"))
    else:
        out.print(
            f"not evaluated (--eval-episodes 0); run: harmodt evaluate {model_path}",
            highlight=False,
            soft_wrap=True,
        )
    lines = [f"model: {model_path}", f"run info: {run_dir / RUN_FILE}"]
    if logger in ("file", "both"):
        lines.append(f"logs: {run_dir}")
    if logger in ("tensorboard", "both"):
        lines.append(f"tensorboard: tensorboard --logdir {run_dir / 'tensorboard'}")
    lines.append(
        "plots: " + ", ".join(str(p) for p in plots) if plots else f"plots: {plot_note}"
    )
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #


def _cmd_evaluate(args: argparse.Namespace, out: Console) -> int:
    from dataset_recipes import schema

    _positive("--episodes", args.episodes)
    _positive("--workers", args.workers, allow_zero=True)
    _positive("--max-steps", args.max_steps)
    model_path = Path(args.model)
    algo = load_model(model_path, args.device)
    run = _read_run_file(model_path)
    dataset_id = args.dataset or run.get("dataset_id")
    if not dataset_id:
        raise CliError(
            f"no --dataset given and no {RUN_FILE} with a dataset id next to "
            f"{str(model_path)!r}; pass --dataset <recipe dataset id with the "
            "model's tasks>"
        )
    minari_dataset = load_minari(str(dataset_id))
    suite = [
        str(t) for t in minari_dataset.storage.metadata.get(schema.METADATA_TASKS, [])
    ]
    if not suite:
        raise CliError(
            f"dataset {dataset_id!r} is not a harmodt-recipes dataset (no task list "
            "in its metadata): it cannot rebuild evaluation environments"
        )
    tasks = list(algo.task_names)
    if args.tasks:
        try:
            chosen = parse_list("--tasks", args.tasks)
        except OptionError as exc:
            raise CliError(str(exc)) from None
        unknown = [t for t in chosen if t not in tasks]
        if unknown:
            raise CliError(
                f"--tasks: the model has no task(s) {unknown}; its tasks: "
                f"{', '.join(tasks)}"
            )
        tasks = chosen
    missing = [t for t in tasks if t not in suite]
    if missing and (args.tasks or len(missing) == len(tasks)):
        raise CliError(
            f"dataset {dataset_id!r} has no environments for the model's task(s) "
            f"{missing}; its tasks: {', '.join(suite)}"
        )
    if missing:  # e.g. an adapted model on its test split: evaluate what is there
        tasks = [t for t in tasks if t in suite]
        print(
            f"{PROG}: note: {dataset_id} has no environments for {len(missing)} of "
            f"the model's tasks ({', '.join(missing)}); evaluating the other "
            f"{len(tasks)}",
            file=sys.stderr,
        )

    from .evaluation import MultiTaskEvaluator

    with MultiTaskEvaluator(
        minari_dataset,
        tasks=tasks,
        n_episodes=args.episodes,
        seed=args.seed,
        max_steps=args.max_steps,
        target_returns=args.target_return,
        workers=args.workers,
    ) as evaluator:
        targets = evaluator.target_returns()
        result = run_evaluation(
            evaluator,
            algo,
            progress=not args.no_progress,
            horizon=_episode_limit(minari_dataset),
            description=f"evaluating {len(tasks)} tasks",
        )

    if args.json:
        payload = {
            "model": str(model_path),
            "dataset_id": dataset_id,
            "grad_steps": algo.grad_step,
            "target_returns": targets,
            **result.to_dict(),
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return EXIT_OK
    shown = Path(model_path.parent.name) / model_path.name
    title = (
        f"{shown} (step {algo.grad_step}): {len(result.tasks)} tasks × "
        f"{result.n_episodes} episodes, seed {result.seed}"
    )
    out.print(result.table(title=title))
    out.print(
        f"mean over tasks: success {100 * result.success_mean:.1f}%, return "
        f"{result.return_mean:.1f}  ({result.env_steps} env steps in "
        f"{result.elapsed_s:.1f} s; dataset {dataset_id})",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- #
# adapt
# --------------------------------------------------------------------------- #


def _cmd_adapt(args: argparse.Namespace, out: Console) -> int:
    from .adapt import ADAPT_METHODS

    if args.method not in ADAPT_METHODS:
        raise CliError(
            f"unknown --method {args.method!r}; choose one of "
            f"{', '.join(ADAPT_METHODS)}"
        )
    _positive("--tune-steps", args.tune_steps)
    model_path = Path(args.model)
    target = Path(
        args.out or model_path.with_name(f"{model_path.stem}-{args.method}.d3")
    )
    if target.resolve() == model_path.resolve():
        raise CliError("--out must differ from the model file (it is not changed)")
    algo = load_model(model_path)
    import harmodt_algo

    data = harmodt_algo.as_multitask_dataset(load_minari(args.dataset))
    known = [t for t in data.task_names if t in algo.task_names]
    if known:
        raise CliError(
            f"the model already has task(s) {known}; adapt adds tasks it never "
            "trained on"
        )
    for name in data.task_names:  # every check is made before a task is added
        algo.add_task(
            name,
            {name: data.episodes[data.task_names.index(name)]},
            method=args.method,
            threshold=args.threshold,
            steps=args.tune_steps,
        )
    tmp = target.with_name(f".{target.name}.tmp")
    algo.save(str(tmp))
    tmp.replace(target)
    out.print(
        f"added {len(data.task_names)} task(s) to {model_path.name} with "
        f"{args.method}: {', '.join(data.task_names)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"model: {target}", highlight=False, soft_wrap=True)
    out.print(
        f"evaluate: harmodt evaluate {target} --dataset {args.dataset}",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- #
# info
# --------------------------------------------------------------------------- #


def describe_model(
    algo: HarmoDT, run: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything ``harmodt info`` shows, as JSON-able data."""
    from .summary import mask_summary

    assert algo.impl is not None  # load_learnable always builds the model
    run = run or {}
    preset = run.get("preset")
    preset_source = "run.json"
    if not preset:
        preset, preset_source = infer_preset(algo.config), "inferred from the config"
    return {
        "tasks": list(algo.task_names),
        "num_tasks": len(algo.task_names),
        "preset": preset,
        "preset_source": preset_source if preset else None,
        "dataset_id": run.get("dataset_id"),
        "grad_steps": algo.grad_step,
        "config": {k: getattr(algo.config, k) for k in SUMMARY_KEYS},
        **mask_summary(algo),
    }


def _cmd_info(args: argparse.Namespace, out: Console) -> int:
    model_path = Path(args.model)
    algo = load_model(model_path)
    info = describe_model(algo, _read_run_file(model_path))
    if args.json:
        sys.stdout.write(
            json.dumps({"model": str(model_path), **info}, indent=2) + "\n"
        )
        return EXIT_OK

    preset = info["preset"] or "custom"
    source = f" ({info['preset_source']})" if info["preset_source"] else ""
    params = info["parameters"]
    head = Table(title=str(model_path), show_header=False)
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("tasks", f"{info['num_tasks']}: {', '.join(info['tasks'])}")
    head.add_row("preset", f"{preset}{source}")
    if info["dataset_id"]:
        head.add_row("dataset", str(info["dataset_id"]))
    head.add_row("grad steps", f"{info['grad_steps']:,}")
    head.add_row(
        "parameters",
        f"{params['total']:,} in the transformer ({params['masked']:,} under masks)",
    )
    cfg = info["config"]
    head.add_row(
        "architecture",
        f"embed {cfg['embed_size']}, layers {cfg['num_layers']}, "
        f"heads {cfg['num_heads']}, ff {cfg['ff_size'] or 4 * cfg['embed_size']}, "
        f"context {cfg['context_size']}, max_timestep {cfg['max_timestep']}, "
        f"prompt {cfg['prompt_length']}",
    )
    upd = info["mask_update"]
    change = (
        f"{upd['change_count']} entries"
        if upd["change_count"]
        else f"{upd['change_fraction']} of active"
    )
    estimator = (
        "accumulated training gradients"
        if upd["harmony_estimator"] == "accumulated"
        else f"fresh batch of {upd['mask_batch_size']}"
        + ("" if upd["harmony_dropout"] else ", dropout off")
    )
    head.add_row(
        "masks",
        f"init {upd['mask_init']}, sparsity {upd['sparsity']}, interval "
        f"{upd['mask_interval']}, change {change} ({upd['change_schedule']}), "
        f"importance {upd['importance']}, gamma {upd['harmony_gamma']}",
    )
    clip = upd["harmony_grad_clip"]
    head.add_row(
        "mask update",
        f"estimator {estimator}; consensus "
        f"{'leave-one-out' if upd['harmony_leave_one_out'] else 'all tasks'}"
        f"{f', task grads clipped to {clip}' if clip else ''}; "
        f"normalisation {upd['score_normalization']}; 1-D params "
        f"{'protected' if upd['protect_1d'] else 'droppable'}; total turnover "
        f"{100 * info['mask_turnover']['mean']:.2f} % of active entries",
    )
    head.add_row(
        "training",
        f"batch {cfg['batch_size']}, lr {cfg['learning_rate']}, "
        f"schedule {cfg['task_schedule']}, seed {cfg['seed']}",
    )
    out.print(head)

    tasks = info["tasks"]
    density = Table(title="per-task masks")
    density.add_column("#", justify="right")
    density.add_column("task")
    density.add_column("density", justify="right")
    density.add_column("active params", justify="right")
    for i, task in enumerate(tasks):
        density.add_row(
            str(i),
            task,
            f"{info['mask_density'][task]:.3f}",
            f"{params['active_per_task'][task]:,}",
        )
    out.print(density)

    ov = info["mask_overlap"]
    if ov["mean"] is None:
        out.print("mask overlap (Jaccard): n/a (one task)", highlight=False)
    else:
        out.print(
            f"mask overlap (Jaccard) between task pairs: mean {ov['mean']:.3f}, "
            f"min {ov['min']:.3f}, max {ov['max']:.3f}",
            highlight=False,
            soft_wrap=True,
        )
        if len(tasks) <= 10:
            matrix = Table(title="pairwise mask overlap (Jaccard)")
            matrix.add_column("#", justify="right")
            for i in range(len(tasks)):
                matrix.add_column(str(i), justify="right")
            for i, row in enumerate(ov["matrix"]):
                matrix.add_row(str(i), *(f"{v:.2f}" for v in row))
            out.print(matrix)
    return EXIT_OK


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):  # str(KeyError) is the repr of its key
        text = f"missing key {text}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["benchmark"]:
        from .benchmark import main as benchmark_main

        return benchmark_main(words[1:], prog=f"{PROG} benchmark")
    args = _build_parser().parse_args(argv)
    args.argv = None if argv is None else ["harmodt", *argv]
    out = Console()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # signal handlers can only be set there
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with d3rlpy_warnings_only(sys.stderr):  # stdout holds tables or JSON
            if args.command == "train":
                return _cmd_train(args, out)
            if args.command == "evaluate":
                return _cmd_evaluate(args, out)
            if args.command == "info":
                return _cmd_info(args, out)
            if args.command == "adapt":
                return _cmd_adapt(args, out)
        raise AssertionError(args.command)  # pragma: no cover
    except (CliError, ValueError, OSError, pickle.UnpicklingError, EOFError) as exc:
        # ValueError covers DatasetError and RecipeError; OSError FileNotFoundError
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
