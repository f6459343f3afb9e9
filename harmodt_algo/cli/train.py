"""``harmodt train`` (and ``--resume``): one run directory holding d3rlpy's logs,
resumable checkpoints, the final ``model.d3`` and a ``run.json``.

Why ``run.json``: it records the dataset id, preset and the exact command, so
``harmodt evaluate`` finds the evaluation environments without being told
again and ``--resume`` re-runs the original command from its newest
checkpoint, ending with the model an uninterrupted run would have made.
Everything cheap is checked (:func:`_train_plan`) before data is loaded or a
file written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dataset_recipes.commandline import EXIT_OK, say

from ..checkpoints import (
    CheckpointDir,
    StopRequest,
    TrainingStopped,
    fit_resumably,
)
from ..files import folder_problem, write_json_atomic
from ..fingerprint import dataset_fingerprint
from ..locks import Busy, exclusive, folder_lock
from ..model_files import safe_sibling, save_safe_model
from .common import (
    MODEL_FILE,
    PROG,
    RUN_FILE,
    CliError,
    check_positive,
    load_minari,
    parse_overrides,
    read_run_file,
    torch_device,
)
from .evaluate import episode_limit, run_evaluation
from .parser import build_parser

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation import EvaluationResult, MultiTaskEvaluator
    from ..harmodt import HarmoDT

__all__ = ["cmd_train"]


# --------------------------------------------------------------------------- #
# The plan: arguments checked and resolved, no I/O yet
# --------------------------------------------------------------------------- #


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


def _resume_args(args: argparse.Namespace) -> tuple[Path, argparse.Namespace]:
    """The run directory and the original ``train`` arguments of ``--resume``."""
    run_dir = Path(args.resume).resolve()  # "." has a name and a parent
    run_info = read_run_file(run_dir / MODEL_FILE)
    command = run_info.get("command")
    if not isinstance(command, list) or command[1:2] != ["train"]:
        raise CliError(
            f"{str(run_dir)!r} is not a harmodt train run directory (no run.json "
            "with its command)"
        )
    if run_info.get("status") == "finished":
        raise CliError(f"the run in {str(run_dir)!r} has already finished")
    _check_resume_options(args)
    original = build_parser().parse_args([str(w) for w in command[1:]])
    if original.resume:
        raise CliError(f"{str(run_dir)!r}: its command is itself a --resume")
    for name in _MACHINE_OPTIONS:  # where to run may change; what to run may not
        if getattr(args, name) not in (None, False):
            setattr(original, name, getattr(args, name))
    original.argv = command
    return run_dir, original


#: Options of ``train`` that say how this machine runs a run, not what the run
#: is: ``--resume`` takes them; every other option is the original command's.
_MACHINE_OPTIONS = ("no_progress", "verbose", "threads", "device", "eval_workers")


def _check_resume_options(args: argparse.Namespace) -> None:
    """``--resume`` continues the original command: an option that would
    change the run is refused by name rather than silently ignored."""
    parser = build_parser()
    defaults = vars(parser.parse_args(["train"]))
    given = [
        name
        for name, value in vars(args).items()
        if name in defaults
        and name not in (*_MACHINE_OPTIONS, "resume", "command")
        and value != defaults[name]
    ]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        flags = flags.replace("--overrides", "--set")
        raise CliError(
            f"--resume continues the run with its original command, so it takes "
            f"no {flags} (only --threads, --device, --eval-workers, "
            "--no-progress, -v); start a new run to change them"
        )


def _train_plan(args: argparse.Namespace) -> _TrainPlan:
    """Everything cheap, checked before any data is loaded or file written."""
    from ..harmodt import PRESETS

    resume_dir = None
    if args.resume:
        resume_dir, args = _resume_args(args)
    elif not args.dataset:
        raise CliError(
            "--dataset is required (or --resume RUN_DIR to continue a stopped run)"
        )
    if resume_dir is None:
        problem = folder_problem(args.logdir)
        if problem is not None:
            raise CliError(f"--logdir {args.logdir!r} {problem}")
    check_positive("--checkpoint-every", args.checkpoint_every)
    preset = args.preset.lower()
    if preset not in PRESETS:
        raise CliError(f"unknown preset {args.preset!r}; presets: {', '.join(PRESETS)}")
    check_positive("--steps", args.steps)
    check_positive("--eval-every", args.eval_every)
    check_positive("--eval-episodes", args.eval_episodes, allow_zero=True)
    check_positive("--eval-workers", args.eval_workers, allow_zero=True)
    check_positive("--threads", args.threads)
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
    device = torch_device(args.device)
    return _TrainPlan(args, resume_dir, preset, overrides, steps, eval_every, device)


# --------------------------------------------------------------------------- #
# The run directory and its run.json
# --------------------------------------------------------------------------- #


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


def _logger_factory(kind: str, root: Path, run_dir: Path) -> Any:
    """The d3rlpy logger adapter for ``--logger`` (TensorBoard needs an extra)."""
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
    """``<preset>_<suite>_<quality>`` for a recipe id, safe as a folder name."""
    from dataset_recipes import parse_dataset_id

    recipe = parse_dataset_id(dataset_id)
    short = f"{recipe.group}_{recipe.quality}" if recipe else dataset_id
    return re.sub(r"[^-\w.]+", "-", f"{preset}_{short}").strip("-")


def _new_run_dir(root: Path, name: str) -> Path:
    """``<root>/<name>_<timestamp>``, suffixed if two runs start in one second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    candidate = root / f"{name}_{stamp}"
    suffix = 1
    while candidate.exists():
        candidate = root / f"{name}_{stamp}-{suffix}"
        suffix += 1
    return candidate


def _check_same_data(plan: _TrainPlan, data: Any) -> None:
    """A resumed run trains on the data it started with (runs made before
    the fingerprint existed are not checked)."""
    assert plan.resume_dir is not None
    recorded = read_run_file(plan.resume_dir / MODEL_FILE).get("dataset_fingerprint")
    now = dataset_fingerprint(data)
    if recorded is not None and recorded != now:
        raise CliError(
            f"{plan.args.dataset!r} changed since the run started (fingerprint "
            f"{recorded}, now {now}): resume needs the same data; rebuild it as "
            "it was or start a new run"
        )


def _lock_run(run_dir: Path, held: ExitStack) -> None:
    """Hold ``run_dir``'s lock until ``held`` closes: one writer per run."""
    try:
        held.enter_context(exclusive(folder_lock(run_dir), f"run {str(run_dir)!r}"))
    except Busy as exc:
        raise CliError(str(exc)) from None


def _open_run(
    plan: _TrainPlan, algo: HarmoDT, data: Any, out: Console, held: ExitStack
) -> tuple[Path, Path, CheckpointDir]:
    """(run directory, logger root, checkpoints): a new run directory, or the
    resumed one with its newest checkpoint loaded into ``algo``; its lock is
    held in ``held`` (a second writer of the run is refused)."""
    if plan.resume_dir is None:
        root = Path(plan.args.logdir)
        name = plan.args.name or _default_name(plan.preset, plan.args.dataset)
        run_dir = _new_run_dir(root, name)
        run_dir.mkdir(parents=True)
        _lock_run(run_dir, held)
        return run_dir, root, CheckpointDir(run_dir / "checkpoints")
    _lock_run(plan.resume_dir, held)  # before reading its checkpoints
    _check_same_data(plan, data)
    checkpoints = CheckpointDir(plan.resume_dir / "checkpoints")
    algo.build_with_dataset(data)
    try:
        loaded = checkpoints.load_latest(algo)
    except FileNotFoundError as exc:
        raise CliError(f"cannot resume: {exc}") from None
    if checkpoints.skipped:
        say(
            out,
            f"note: skipped unreadable newer checkpoint(s): "
            f"{', '.join(checkpoints.skipped)}",
        )
    say(out, f"resuming {plan.resume_dir} from {loaded.name} (step {algo.grad_step})")
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
        "dataset_fingerprint": dataset_fingerprint(data),
    }
    if plan.resume_dir is not None:
        previous = read_run_file(run_dir / MODEL_FILE)
        info["started"] = previous.get("started", now)
        info["resumed"] = [
            *previous.get("resumed", []),
            {"at": now, "step": algo.grad_step},
        ]
    return info


def _final_record(
    final: EvaluationResult, history: list[dict[str, Any]], steps: int
) -> dict[str, Any]:
    """``run.json``'s ``final``: the last evaluation, overall and per task."""
    return {
        "step": history[-1]["step"] if history else steps,
        "success_mean": final.success_mean,
        "return_mean": final.return_mean,
        "tasks": {
            r.task: {"success_rate": r.success_rate, "mean_return": r.mean_return}
            for r in final.tasks
        },
    }


# --------------------------------------------------------------------------- #
# The command
# --------------------------------------------------------------------------- #


def _make_evaluator(
    args: argparse.Namespace, minari_dataset: Any, data: Any
) -> MultiTaskEvaluator | None:
    """The epoch-end evaluator on held-out goals (None for --eval-episodes 0)."""
    if args.eval_episodes <= 0:
        return None
    from ..evaluation import MultiTaskEvaluator

    return MultiTaskEvaluator(
        minari_dataset,
        tasks=list(data.task_names),
        n_episodes=args.eval_episodes,
        seed=0,
        target_returns=data if args.target_return is None else args.target_return,
        workers=args.eval_workers,
    )


def cmd_train(args: argparse.Namespace, out: Console) -> int:
    """``harmodt train``: plan, load, fit with evaluations, record, report."""
    plan = _train_plan(args)
    args = plan.args
    import harmodt_algo

    # isort: split
    import d3rlpy

    from ..harmodt import HarmoDT, HarmoDTConfig

    if args.threads:  # e.g. 1 on a machine shared with other work
        import torch

        torch.set_num_threads(args.threads)
    config = HarmoDTConfig.from_preset(plan.preset, **plan.overrides)
    rank, device = _join_torchrun(plan.device)  # (-1, device) unless torchrun
    algo = HarmoDT(config, device=device, enable_ddp=rank >= 0)
    # config.seed drives sampling, dropout and masks; the weight init draws
    # from torch's global RNG, so seed that too: same flags, same run
    d3rlpy.seed(config.seed)
    minari_dataset = load_minari(args.dataset)
    data = harmodt_algo.as_multitask_dataset(minari_dataset)
    for name in data.task_names:  # the model file says where its tasks came from
        config.task_datasets.setdefault(name, str(args.dataset))
    if rank > 0:
        return _train_worker(plan, algo, data)
    if data.max_episode_length > config.max_timestep:  # fit would fail later
        raise CliError(
            f"the dataset has episodes of {data.max_episode_length} steps but "
            f"max_timestep is {config.max_timestep}; pass --set "
            f"max_timestep={data.max_episode_length} (or more)"
        )
    evaluator = _make_evaluator(args, minari_dataset, data)
    with ExitStack() as held:  # the run directory's lock, until the end
        where = _open_run(plan, algo, data, out, held)
        return _train_and_report(
            plan, algo, data, evaluator, minari_dataset, where, out, rank
        )


def _train_and_report(
    plan: _TrainPlan,
    algo: HarmoDT,
    data: Any,
    evaluator: Any,
    minari_dataset: Any,
    where: tuple[Path, Path, CheckpointDir],
    out: Console,
    rank: int,
) -> int:
    """Fit the opened run, record it in run.json and print the report."""
    args = plan.args
    run_dir, root, checkpoints = where
    run_info = _run_info(plan, data, algo, run_dir)
    write_json_atomic(run_dir / RUN_FILE, run_info)
    say(
        out,
        f"training {plan.preset} on {args.dataset} ({data.num_tasks} tasks): "
        f"{plan.steps} steps, {plan.n_epochs} epoch(s) of {plan.eval_every}",
    )
    say(out, f"run directory: {run_dir}")
    history: list[dict[str, Any]] = []
    code = _fit_run(
        plan, algo, data, evaluator, episode_limit(minari_dataset),
        (run_dir, root, checkpoints), run_info, history, out, rank,
    )  # fmt: skip
    if code != EXIT_OK:
        return code
    final = evaluator.last_result if evaluator is not None else None
    if final is not None:
        run_info["final"] = _final_record(final, history, plan.steps)
    write_json_atomic(run_dir / RUN_FILE, run_info)
    _report_run(plan, algo, run_dir, final, out, run_info.get("train_steps_per_s"))
    return EXIT_OK


def _train_worker(plan: _TrainPlan, algo: HarmoDT, data: Any) -> int:
    """A torchrun rank > 0: trains its slice of every batch; rank 0 writes."""
    import d3rlpy

    from ..fit_loop import fit_quietly

    if plan.resume_dir is not None:
        algo.build_with_dataset(data)
        CheckpointDir(plan.resume_dir / "checkpoints").load_latest(algo)
    fit_quietly(
        algo, data, plan.steps - algo.grad_step, n_steps_per_epoch=plan.eval_every
    )
    d3rlpy.distributed.destroy_process_group()
    return EXIT_OK


# --------------------------------------------------------------------------- #
# Fitting: evaluations, checkpoints, a polite stop
# --------------------------------------------------------------------------- #


def _epoch_evaluation(
    plan: _TrainPlan,
    evaluator: MultiTaskEvaluator,
    horizon: int | None,
    history: list[dict[str, Any]],
    out: Console,
) -> Callable[[HarmoDT], dict[str, float]]:
    """fit's evaluator: runs at every epoch end, after the epoch's progress
    bar closed; fit logs the returned metrics through d3rlpy's logger."""

    def evaluate_epoch(trained: HarmoDT) -> dict[str, float]:
        step = trained.grad_step
        epoch = math.ceil(step / plan.eval_every)
        result = run_evaluation(
            evaluator,
            trained,
            progress=not plan.args.no_progress,
            horizon=horizon,
            description=f"evaluating epoch {epoch}/{plan.n_epochs}",
        )
        history.append({"epoch": epoch, "step": step, **result.metrics()})
        say(
            out,
            f"epoch {epoch}/{plan.n_epochs} (step {step}): success "
            f"{100 * result.success_mean:.1f}%, return {result.return_mean:.1f} "
            f"({len(result.tasks)} tasks × {result.n_episodes} episodes, "
            f"{result.elapsed_s:.1f} s)",
        )
        return result.metrics()

    return evaluate_epoch


def _fit_run(
    plan: _TrainPlan,
    algo: HarmoDT,
    data: Any,
    evaluator: MultiTaskEvaluator | None,
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
    every = int(plan.args.checkpoint_every)
    resume = f"harmodt train --resume {run_dir}"
    status, stopped_by, cut = "failed", None, False
    stop = StopRequest()
    try:
        with stop:
            fitted = fit_resumably(
                algo,
                data,
                plan.steps,
                stop,
                every,
                checkpoints.save,
                n_steps_per_epoch=plan.eval_every,
                experiment_name=run_dir.name,
                with_timestamp=False,
                logger_adapter=_logger_factory(plan.args.logger, root, run_dir),
                show_progress=not plan.args.no_progress,
                evaluators=None
                if evaluator is None
                else {
                    "multitask": _epoch_evaluation(
                        plan, evaluator, horizon, history, out
                    )
                },
            )
            speed = _steps_per_second(algo.epoch_metrics) if fitted else None
            if speed is not None:
                run_info["train_steps_per_s"] = speed
            with stop.shielded():
                _save_model(algo, run_dir / MODEL_FILE)
        status = "finished"
        if rank == 0:  # the other ranks have left after their last step
            d3rlpy.distributed.destroy_process_group()
    except TrainingStopped as stopped:
        status, stopped_by = "interrupted", stopped.signum
        run_info["resume"] = resume
    except KeyboardInterrupt:  # a second signal: the newest checkpoint is kept
        status, stopped_by, cut = "interrupted", stop.signum or signal.SIGINT, True
        run_info["resume"] = resume
    except OSError as exc:  # a full disk, a vanished folder: say where
        status = "interrupted"
        run_info["resume"] = resume
        where_ = exc.filename or run_dir
        raise CliError(
            f"cannot write {str(where_)!r} ({exc.strerror or type(exc).__name__}); "
            f"make room and continue with: {resume}"
        ) from None
    except Exception:  # e.g. a torchrun peer killed: the checkpoints remain
        if checkpoints.paths():
            run_info["resume"] = resume
            print(f"{PROG}: training failed; continue with: {resume}", file=sys.stderr)
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
    what = (
        f"interrupted at step {algo.grad_step} of {plan.steps} (the newest "
        "checkpoint is kept)"
        if cut
        else f"stopped after step {algo.grad_step} of {plan.steps} (checkpoint written)"
    )
    print(f"{PROG}: {what}; continue with: {resume}", file=sys.stderr)
    return 128 + int(stopped_by)  # 130 for SIGINT, 143 for SIGTERM


def _save_model(algo: HarmoDT, path: Path) -> None:
    """d3rlpy's ``.d3`` and the code-free ``.safetensors`` beside it, each
    written to a temporary name and renamed: never half a model."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        algo.save(str(tmp))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    save_safe_model(algo, safe_sibling(path))


def _steps_per_second(fitted: list[tuple[int, dict[str, float]]]) -> float | None:
    """Training speed of this process's epochs: 1 / the mean of d3rlpy's
    ``time_step`` (sampling + update, without evaluation or logging)."""
    times = [metrics["time_step"] for _, metrics in fitted if "time_step" in metrics]
    total = sum(times)
    return round(len(times) / total, 2) if total > 0 else None


# --------------------------------------------------------------------------- #
# The report
# --------------------------------------------------------------------------- #


def _draw_plots(plan: _TrainPlan, run_dir: Path) -> tuple[list[Path], str]:
    """(the figures, or why there are none): drawn from the file logger's CSVs."""
    if plan.args.no_plots:
        return [], "skipped (--no-plots)"
    if plan.args.logger not in ("file", "both"):
        return [], "none (plots are drawn from the file logger's CSVs)"
    from ..plots import PlotsUnavailable, plot_run

    try:
        return plot_run(run_dir), ""
    except PlotsUnavailable as exc:
        return [], str(exc)
    except (OSError, ValueError) as exc:
        return [], f"not drawn ({exc})"


def _report_run(
    plan: _TrainPlan,
    algo: HarmoDT,
    run_dir: Path,
    final: EvaluationResult | None,
    out: Console,
    speed: float | None,
) -> None:
    """The end of ``harmodt train``: plots, the result table, where things are,
    and the training speed (what a time estimate on another machine needs)."""
    logger = plan.args.logger
    plots, plot_note = _draw_plots(plan, run_dir)
    model_path = run_dir / MODEL_FILE
    if final is not None:
        out.print(final.table(title=f"{run_dir.name}: step {algo.grad_step}"))
    else:
        say(
            out,
            f"not evaluated (--eval-episodes 0); run: harmodt evaluate {model_path}",
        )
    lines = [f"model: {model_path}", f"run info: {run_dir / RUN_FILE}"]
    if speed is not None:
        lines.append(f"training speed: {speed:g} steps/s (d3rlpy's time_step)")
    if logger in ("file", "both"):
        lines.append(f"logs: {run_dir}")
    if logger in ("tensorboard", "both"):
        lines.append(f"tensorboard: tensorboard --logdir {run_dir / 'tensorboard'}")
    lines.append(
        "plots: " + ", ".join(str(p) for p in plots) if plots else f"plots: {plot_note}"
    )
    for line in lines:
        say(out, line)
