"""One cell of a matrix: a (dataset, method, seed) trained from scratch for the
shared budget and evaluated on its final checkpoint, as a JSON record.

The record is the unit of resumption (a finished cell is never recomputed) and
of the report, so it carries everything a reader needs to judge it: the
budget that must match for reuse, timings, per-task results, the model's
size, how far a HarmoDT model's masks moved, the data, the config, versions
and the host. A HarmoDT cell stopped part-way resumes from its newest
checkpoint (:mod:`.resume`) and ends with the record an uninterrupted cell
would have had, wall-clock fields aside (``resumed_from`` lists the steps).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..baselines import baseline_policy, fit_baseline, make_baseline
from ..checkpoints import StopRequest, TrainingStopped, fit_resumably
from ..data import MultiTaskDataset
from ..harmodt import HarmoDT
from ..options import OptionError, parse_device
from ..summary import active_parameters, count_parameters, mask_movement
from .datasets import DatasetSpec, Log, dataset_facts
from .errors import BenchmarkError
from .methods import (
    HARMODT_METHODS,
    METHOD_LABELS,
    METHODS,
    check_methods,
    validate_overrides,
)
from .resume import CellCheckpoints, EpochMetrics
from .unseen import HeldOut, HeldOutData, check_unseen, evaluate_unseen, load_held_out

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..evaluation import EvaluationResult, MultiTaskEvaluator

__all__ = [
    "CELL_SCHEMA",
    "BenchmarkSettings",
    "CellKey",
    "cell_path",
    "checkpoint_dir",
    "read_cell",
    "run_cell",
]

#: Version of the cell JSON layout.
CELL_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """What every cell of a matrix shares.

    Attributes:
        steps: gradient steps per cell (one epoch; every method).
        eval_episodes: evaluation episodes per task, each on its own held-out
            goal (design §7: 10).
        eval_seed: picks the held-out goals; the same for every method and
            training seed, so cells are paired.
        eval_max_steps: cut evaluation episodes (default: the env's limit).
        eval_stop_on_success: end each evaluation episode at its first
            success (the same success rate in fewer env steps; returns are
            of the shortened episodes); part of the budget when set.
        eval_workers: evaluator worker processes (0: in process).
        target_return: the Decision Transformers' initial return-to-go for
            every task (default: each task's best return in the dataset).
        device: ``cpu`` or ``cuda:N``.
        overrides: per method, config options (e.g. ``{"mtbc":
            {"batch_size": 64}}``), part of the cell's budget.
        save_models: also save the final model next to the cell
            (``seed<k>.d3``).
        threads: ``torch.set_num_threads`` (default: torch's choice).
        curve_every: HarmoDT presets also evaluate every this many steps and
            at the last step, recorded as the cell's ``curve``: the learning
            curve that shows whether the budget has converged, and the
            HarmoDT release's protocol (the best of these evaluations; the
            report puts it beside the final checkpoint's).
        curve_episodes: goals per task of each curve evaluation (default:
            ``eval_episodes``), so that one cell runs both protocols, e.g.
            the release's 10 goals every 5000 steps and Meta-World's 50 on
            the final checkpoint. Both take the first goals of one draw
            (:func:`~harmodt_algo.evaluation.envs.goal_indices` with
            ``eval_seed`` is a prefix of one permutation), so the curve's are
            the first ``curve_episodes`` of the final evaluation's (or
            contain them, when more): held out like them, the same at every
            point as in the release, and nested, so that the two protocols
            differ by the selection and the goal count, not by another draw.
        checkpoint_every: HarmoDT presets write a checkpoint every this many
            steps (0: none), so a stopped cell resumes there rather than from
            step 0; baselines are short and restart from scratch. Not part of
            the budget: it does not change the result.
        held_out: also adapt each trained model to the tasks of a held-out
            dataset and evaluate them (:mod:`.unseen`); part of the budget,
            so a cell made without it (or with other held-out settings) is
            never reused for it, nor the other way round.
    """

    steps: int
    eval_episodes: int = 10
    eval_seed: int = 0
    eval_max_steps: int | None = None
    eval_stop_on_success: bool = False
    eval_workers: int = 0
    target_return: float | None = None
    device: str = "cpu"
    overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    save_models: bool = False
    threads: int | None = None
    curve_every: int | None = None
    curve_episodes: int | None = None
    checkpoint_every: int = 1000
    held_out: HeldOut | None = None

    @property
    def curve_goals(self) -> int:
        """Goals per task of a curve evaluation."""
        return (
            self.eval_episodes if self.curve_episodes is None else self.curve_episodes
        )

    def validate(self) -> None:
        for name in ("steps", "eval_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BenchmarkError(f"{name} must be a positive int, got {value!r}")
        self._validate_goals()
        if self.eval_max_steps is not None and self.eval_max_steps <= 0:
            raise BenchmarkError(
                f"eval_max_steps must be > 0, got {self.eval_max_steps}"
            )
        if self.eval_workers < 0:
            raise BenchmarkError(f"eval_workers must be >= 0, got {self.eval_workers}")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise BenchmarkError(f"checkpoint_every must be an int >= 0, got {every!r}")
        if self.threads is not None and self.threads <= 0:
            raise BenchmarkError(f"threads must be > 0, got {self.threads}")
        if self.curve_every is not None and not 0 < self.curve_every < self.steps:
            raise BenchmarkError(
                f"curve_every must be in (0, steps = {self.steps}), got "
                f"{self.curve_every}"
            )
        if self.curve_episodes is not None and self.curve_every is None:
            raise BenchmarkError("curve_episodes needs curve_every (--curve-every N)")
        unknown = sorted(set(self.overrides) - set(METHODS))
        if unknown:
            raise BenchmarkError(
                f"overrides for unknown method(s) {unknown}; valid methods: "
                f"{', '.join(METHODS)}"
            )
        for method, options in self.overrides.items():
            validate_overrides(method, options)
        _torch_device(self.device)
        if self.held_out is not None:
            self.held_out.validate()

    def _validate_goals(self) -> None:
        """Goals per task are held-out goals, each episode its own: at most
        :data:`~harmodt_algo.evaluation.envs.MAX_EPISODES_PER_TASK`, checked
        here rather than at the first evaluation, after training."""
        from ..evaluation.envs import MAX_EPISODES_PER_TASK

        curve = self.curve_episodes
        if curve is not None and (
            isinstance(curve, bool) or not isinstance(curve, int) or curve <= 0
        ):
            raise BenchmarkError(
                f"curve_episodes must be a positive int, got {curve!r}"
            )
        for name in ("eval_episodes", "curve_episodes"):
            value = getattr(self, name)
            if value is not None and value > MAX_EPISODES_PER_TASK:
                raise BenchmarkError(
                    f"{name} must be <= {MAX_EPISODES_PER_TASK} (the held-out "
                    f"goals per task, one episode each), got {value}"
                )

    def budget(self, method: str) -> dict[str, Any]:
        """What must match for a finished cell to be reused."""
        overrides = dict(self.overrides.get(method, {}))
        return {
            "steps": self.steps,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.eval_seed,
            "eval_max_steps": self.eval_max_steps,
            # only when set: cells made before it existed stay reusable
            **({"eval_stop_on_success": True} if self.eval_stop_on_success else {}),
            "target_return": self.target_return,
            "overrides": _jsonable(overrides),
            **({"curve_every": self.curve_every} if self.curve_every else {}),
            # only when it differs: cells made before it existed stay reusable
            **(
                {"curve_episodes": self.curve_goals}
                if self.curve_every and self.curve_goals != self.eval_episodes
                else {}
            ),
            **(
                {"held_out": self.held_out.budget(method, overrides)}
                if self.held_out is not None
                else {}
            ),
        }


@dataclasses.dataclass(frozen=True)
class CellKey:
    dataset: DatasetSpec
    method: str
    seed: int

    def __str__(self) -> str:
        return f"{self.dataset.dataset_id} | {self.method} | seed {self.seed}"


def cell_path(
    out: str | Path, dataset: DatasetSpec | str, method: str, seed: int
) -> Path:
    """``<out>/<dataset-slug>/<method>/seed<k>.json``."""
    spec = dataset if isinstance(dataset, DatasetSpec) else DatasetSpec(dataset)
    return Path(out) / spec.slug / method / f"seed{seed}.json"


def checkpoint_dir(
    out: str | Path, dataset: DatasetSpec | str, method: str, seed: int
) -> Path:
    """``<out>/<dataset-slug>/<method>/.seed<k>.checkpoints``: hidden, next to
    the cell, removed once the cell is written."""
    return cell_path(out, dataset, method, seed).with_name(f".seed{seed}.checkpoints")


def read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "success_mean" not in data:
        return None
    return data


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _torch_device(device: str) -> Any:
    """``cpu`` → False (d3rlpy's CPU), ``cuda``/``cuda:N`` → ``cuda:N``."""
    try:
        return parse_device(device)
    except OptionError as exc:
        raise BenchmarkError(f"--device: {exc}") from None


# --------------------------------------------------------------------------- #
# Training and evaluation
# --------------------------------------------------------------------------- #


class _CaptureAdapter:
    """A d3rlpy logger adapter that keeps the last epoch's metrics in memory."""

    def __init__(self, sink: dict[str, Any]):
        self._sink = sink

    def write_params(self, params: dict[str, Any]) -> None:
        pass

    def before_write_metric(self, epoch: int, step: int) -> None:
        self._sink.update(epoch=epoch, step=step, metrics={})

    def write_metric(self, epoch: int, step: int, name: str, value: float) -> None:
        self._sink["metrics"][name] = float(value)

    def after_write_metric(self, epoch: int, step: int) -> None:
        pass

    def save_model(self, epoch: int, algo: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def watch_model(self, epoch: int, step: int) -> None:
        pass


class _CaptureFactory:
    def __init__(self) -> None:
        self.last: dict[str, Any] = {"epoch": 0, "step": 0, "metrics": {}}

    def create(
        self, algo: Any, experiment_name: str, n_steps_per_epoch: int
    ) -> _CaptureAdapter:
        return _CaptureAdapter(self.last)


def _curve_entry(step: int, result: EvaluationResult) -> dict[str, Any]:
    """One point of the learning curve: the mean and per-task success, and
    its goals per task (a curve's may differ from the final evaluation's)."""
    return {
        "step": step,
        "success_mean": result.success_mean,
        "success": {r.task: r.success_rate for r in result.tasks},
        "n_episodes": result.n_episodes,
    }


@dataclasses.dataclass
class _Evaluations:
    """Every evaluation of one cell, so the learning curve and the final
    result use the same held-out goals (the curve's the first
    ``curve_episodes`` of the final's) and targets; the curve's time is kept
    apart, because it is not training time (:meth:`train_time`)."""

    minari_dataset: Any
    data: MultiTaskDataset
    settings: BenchmarkSettings
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    curve_time: float = 0.0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    train_before: float = 0.0  # what a stopped run had trained
    on_curve: Callable[[list[dict[str, Any]]], None] | None = None

    def train_time(self) -> float:
        """Training time so far: since the cell started, less the curve's
        evaluations, plus what a stopped run had trained before."""
        return self.train_before + time.perf_counter() - self.started - self.curve_time

    def evaluator(
        self,
        minari_dataset: Any = None,
        data: MultiTaskDataset | None = None,
        *,
        n_episodes: int | None = None,
    ) -> MultiTaskEvaluator:
        """The cell's evaluator: the same goals at every point of the curve,
        and on the held-out tasks (``minari_dataset``, targets from ``data``);
        ``n_episodes`` goals per task (default ``eval_episodes``), the first
        ones of the same seed's goals."""
        from ..evaluation import MultiTaskEvaluator

        settings = self.settings
        targets = (
            (self.data if data is None else data)
            if settings.target_return is None
            else settings.target_return
        )
        return MultiTaskEvaluator(
            self.minari_dataset if minari_dataset is None else minari_dataset,
            n_episodes=settings.eval_episodes if n_episodes is None else n_episodes,
            seed=settings.eval_seed,
            max_steps=settings.eval_max_steps,
            target_returns=targets,
            workers=settings.eval_workers,
            stop_on_success=settings.eval_stop_on_success,
        )

    def _evaluate_curve(self, model: HarmoDT, step: int) -> dict[str, Any]:
        """``model`` on the curve's goals, timed apart from training."""
        t = time.perf_counter()
        with self.evaluator(n_episodes=self.settings.curve_goals) as evaluator:
            result = evaluator.evaluate(evaluator.policy_for(model))
        self.curve_time += time.perf_counter() - t
        return _curve_entry(step, result)

    def curve_point(self, model: HarmoDT) -> float:
        """A ``fit`` evaluator: one point of the learning curve (the last
        step's comes after the fit, :meth:`final_point`)."""
        if model.grad_step >= self.settings.steps:
            return self.curve[-1]["success_mean"] if self.curve else math.nan
        point = self._evaluate_curve(model, model.grad_step)
        self.curve.append(point)
        if self.on_curve is not None:
            self.on_curve(self.curve)
        return float(point["success_mean"])

    def final_point(self, algo: Any, result: EvaluationResult) -> dict[str, Any] | None:
        """The curve's point at the last step (the release's best-so-far
        includes its last evaluation): the final evaluation itself when the
        goals per task are the same, else ``algo`` on the curve's goals;
        None for a cell without a curve."""
        if not self.curve:
            return None
        steps = self.settings.steps
        if self.settings.curve_goals == self.settings.eval_episodes:
            return _curve_entry(steps, result)
        return self._evaluate_curve(algo, steps)

    def restore(self, points: list[dict[str, Any]], model: HarmoDT) -> None:
        """A resumed cell's curve: the stored points up to its step, and the
        point at its step when the stop came before that evaluation."""
        step, every = model.grad_step, self.settings.curve_every
        self.curve = list(points)
        missing = not self.curve or self.curve[-1]["step"] != step
        if every and 0 < step < self.settings.steps and step % every == 0 and missing:
            self.curve_point(model)

    def final(self, algo: Any) -> tuple[EvaluationResult, Any]:
        """The final checkpoint's result and the targets it was given."""
        with self.evaluator() as evaluator:
            targets = evaluator.target_returns()
            if isinstance(algo, HarmoDT):
                policy: Any = evaluator.policy_for(algo)
            else:
                policy = baseline_policy(algo, self.data.task_names, targets)
            return evaluator.evaluate(policy), targets


def _fit_options(
    method: str, capture: _CaptureFactory, evaluations: _Evaluations
) -> dict[str, Any]:
    """``HarmoDT.fit``'s options of a cell (all but the data and the steps)."""
    every = evaluations.settings.curve_every
    return {
        "n_steps_per_epoch": every or evaluations.settings.steps,
        "experiment_name": f"benchmark_{method}",
        "with_timestamp": False,
        "logger_adapter": capture,
        "show_progress": False,
        "evaluators": {"curve": evaluations.curve_point} if every else None,
    }


def _fit_harmodt(
    method: str,
    data: MultiTaskDataset,
    seed: int,
    device: Any,
    capture: _CaptureFactory,
    evaluations: _Evaluations,
    store: CellCheckpoints | None,
) -> tuple[HarmoDT, torch.Tensor, list[int]]:
    """Train a HarmoDT preset (resumable with ``store``); returns it, its
    initial (T, N) masks and the steps it was resumed from."""
    settings = evaluations.settings
    overrides = dict(settings.overrides.get(method, {}))
    algo = HarmoDT.from_preset(method, device=device, **{**overrides, "seed": seed})
    algo.build_with_dataset(data)  # the model fit will train, masks as drawn
    assert algo.impl is not None
    initial_masks = algo.impl.flat_masks().clone()  # (T, N)
    options = _fit_options(method, capture, evaluations)
    if store is None:
        algo.fit(data, n_steps=settings.steps, **options)
        return algo, initial_masks, []
    resumed_from = _fit_resumable(algo, data, capture, evaluations, store, options)
    return algo, initial_masks, resumed_from


def _fit_resumable(
    algo: HarmoDT,
    data: MultiTaskDataset,
    capture: _CaptureFactory,
    evaluations: _Evaluations,
    store: CellCheckpoints,
    options: dict[str, Any],
) -> list[int]:
    """Fit from the newest checkpoint (if any) to the budget, checkpointing
    every ``store.every`` steps and at the end; SIGINT/SIGTERM finish the
    step, checkpoint and raise :class:`TrainingStopped`. Returns the steps the
    cell was resumed from."""
    steps = evaluations.settings.steps
    metrics, resumed_from = EpochMetrics(), []
    evaluations.on_curve = store.save_curve
    resumed = store.resume(algo)
    if resumed is not None:
        metrics, resumed_from = resumed.metrics, resumed.resumed_from
        evaluations.train_before = resumed.train_time_s
        evaluations.restore(resumed.curve, algo)
        if resumed.fit is not None:  # stopped after the fit: evaluate only
            capture.last.update(resumed.fit)
    with StopRequest() as stop:
        fitted = fit_resumably(
            algo,
            data,
            steps,
            stop,
            store.every,
            lambda trained: store.save(
                trained, metrics, evaluations.train_time(), resumed_from
            ),
            on_step=lambda trained, epoch: metrics.add(
                epoch, trained.last_step_metrics
            ),
            save_last_step=False,  # written below, with the fit's record
            **options,
        )
        if fitted:
            # the last epoch's means over all its steps, before the stop too
            capture.last["metrics"].update(metrics.means())
            train_time = evaluations.train_time()
            store.save(algo, metrics, train_time, resumed_from, fit=capture.last)
        if stop.signum is not None:
            raise TrainingStopped(stop.signum, algo.grad_step)
    return resumed_from


def _fit_baseline(
    method: str,
    data: MultiTaskDataset,
    device: Any,
    capture: _CaptureFactory,
    settings: BenchmarkSettings,
) -> Any:
    """Train a one-hot d3rlpy baseline."""
    overrides = dict(settings.overrides.get(method, {}))
    algo = make_baseline(method, device=device, **overrides)
    fit_baseline(
        algo,
        data,
        settings.steps,
        experiment_name=f"benchmark_{method}",
        with_timestamp=False,
        logger_adapter=capture,
        show_progress=False,
    )
    return algo


# --------------------------------------------------------------------------- #
# The record
# --------------------------------------------------------------------------- #


def _reproducibility(algo: HarmoDT, data: MultiTaskDataset) -> dict[str, Any] | None:
    """For a model whose masks are rewired: how reproducible its final mask
    update's choice is (two independent estimates; see reproducibility.py)."""
    if not (algo.config.uses_masks and algo.config.mask_interval > 0):
        return None
    from ..reproducibility import mask_reproducibility

    t = time.perf_counter()
    out = mask_reproducibility(algo, data)
    return {**out, "time_s": time.perf_counter() - t}


def source_commit() -> str | None:
    """The git commit of the harmodt checkout this process runs, with
    ``+dirty`` when tracked files differ from it; None outside a git
    checkout. Recorded in every cell, so that each result names its code."""
    root = Path(__file__).resolve().parents[2]

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *argv],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    out = {"harmodt": __version__, "python": platform.python_version()}
    commit = source_commit()
    if commit:
        out["harmodt_commit"] = commit
    for package in ("d3rlpy", "torch", "metaworld", "minari", "gymnasium", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover
            out[package] = "?"
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _identity(
    method: str,
    dataset: DatasetSpec,
    seed: int,
    settings: BenchmarkSettings,
    algo: Any,
    capture: _CaptureFactory,
) -> dict[str, Any]:
    """Which cell this is and the budget it ran (what resuming compares)."""
    return {
        "schema": CELL_SCHEMA,
        "dataset_id": dataset.dataset_id,
        "dataset_slug": dataset.slug,
        "method": method,
        "label": METHOD_LABELS[method],
        "kind": "harmodt" if method in HARMODT_METHODS else "d3rlpy",
        "algorithm": type(algo).__name__,
        "seed": seed,
        "budget": settings.budget(method),
        "steps": int(capture.last.get("step") or settings.steps),
        "batch_size": int(algo.config.batch_size),
        "device": settings.device,
    }


def _model_facts(
    algo: Any, initial_masks: torch.Tensor | None, data: MultiTaskDataset
) -> dict[str, Any]:
    """The model's size and, for HarmoDT, how far its masks moved."""
    return {
        "param_count": count_parameters(algo),
        "active_param_count": (
            active_parameters(algo) if isinstance(algo, HarmoDT) else None
        ),
        "masks": (
            {
                **mask_movement(initial_masks, algo),
                "reproducibility": _reproducibility(algo, data),
            }
            if initial_masks is not None
            else None
        ),
    }


def _results(
    result: EvaluationResult,
    curve: list[dict[str, Any]] | None,
    targets: Any,
    capture: _CaptureFactory,
) -> dict[str, Any]:
    """The final evaluation (and the learning curve that leads to it)."""
    return {
        "success_mean": result.success_mean,
        "curve": curve,
        "return_mean": result.return_mean,
        "success": {r.task: r.success_rate for r in result.tasks},
        "return": {r.task: r.mean_return for r in result.tasks},
        "target_returns": targets,
        "final_metrics": capture.last.get("metrics", {}),
        "evaluation": result.to_dict(),
    }


def _provenance(started: str) -> dict[str, Any]:
    """Versions, host and wall-clock time: what a rerun elsewhere compares."""
    import torch

    return {
        "versions": _versions(),
        "host": {
            "machine": platform.machine(),
            "system": platform.system(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "started_at": started,
        "finished_at": _now(),
    }


def _cell_checkpoints(
    method: str,
    checkpoints: str | Path | None,
    settings: BenchmarkSettings,
    log: Log | None,
) -> CellCheckpoints | None:
    """The cell's checkpoint folder: HarmoDT presets only, when asked for."""
    if checkpoints is None or not settings.checkpoint_every:
        return None
    if method not in HARMODT_METHODS:
        return None
    budget = settings.budget(method)
    return CellCheckpoints(checkpoints, budget, settings.checkpoint_every, log)


def _held_out(
    settings: BenchmarkSettings,
    loaded: HeldOutData | None,
    data: MultiTaskDataset,
    dataset: DatasetSpec,
    log: Log | None,
) -> HeldOutData | None:
    """The cell's held-out data (None without ``settings.held_out``), its
    tasks checked to be new before any training."""
    if settings.held_out is None:
        return None
    check_unseen(data, dataset.dataset_id, settings.held_out)
    held = loaded or load_held_out(settings.held_out, log=log)
    check_unseen(data, dataset.dataset_id, held)
    return held


def run_cell(
    method: str,
    dataset: DatasetSpec,
    minari_dataset: Any,
    data: MultiTaskDataset,
    seed: int,
    settings: BenchmarkSettings,
    *,
    checkpoints: str | Path | None = None,
    log: Log | None = None,
    held_out: HeldOutData | None = None,
) -> tuple[dict[str, Any], Any]:
    """Train ``method`` on ``data`` for ``settings.steps`` steps with ``seed``,
    evaluate the final model; returns (the cell record, the fitted algorithm).

    With ``settings.held_out`` the record also has ``unseen``: copies of the
    model adapted to the held-out tasks and evaluated on them (:mod:`.unseen`;
    ``held_out`` is that dataset loaded, else it is loaded here, before any
    training, like the check that its tasks are new).

    Writes nothing, except for a HarmoDT preset given a ``checkpoints``
    folder (:func:`checkpoint_dir`) and ``settings.checkpoint_every`` > 0: a
    checkpoint there every that many steps, resumed from when present (one of
    another budget raises :class:`BenchmarkError`). SIGINT/SIGTERM then
    finish the step, checkpoint and raise
    :class:`~harmodt_algo.checkpoints.TrainingStopped`. The caller removes
    the folder once the record is written. Baselines restart from scratch.
    """
    import d3rlpy
    import torch

    device = _torch_device(settings.device)
    held = _held_out(settings, held_out, data, dataset, log)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    store = _cell_checkpoints(method, checkpoints, settings, log)
    started = store.begin(_now()) if store is not None else _now()
    capture = _CaptureFactory()
    evaluations = _Evaluations(minari_dataset, data, settings)
    d3rlpy.seed(seed)
    evaluations.started = time.perf_counter()
    initial_masks: torch.Tensor | None = None
    resumed_from: list[int] = []  # baselines always start from scratch
    if method in HARMODT_METHODS:
        algo, initial_masks, resumed_from = _fit_harmodt(
            method, data, seed, device, capture, evaluations, store
        )
    else:
        check_methods([method])  # raises with the valid names
        algo = _fit_baseline(method, data, device, capture, settings)
    if device is not False and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    train_time = evaluations.train_time()

    t1 = time.perf_counter()
    result, targets = evaluations.final(algo)
    eval_time = time.perf_counter() - t1
    last = evaluations.final_point(algo, result)
    curve = [*evaluations.curve, last] if last is not None else None

    is_dt = isinstance(algo, HarmoDT) or method == "mtdt-d3rlpy"
    record: dict[str, Any] = {
        **_identity(method, dataset, seed, settings, algo, capture),
        **_model_facts(algo, initial_masks, data),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "resumed_from": resumed_from,
        **_results(result, curve, targets if is_dt else None, capture),
        "dataset": dataset_facts(minari_dataset, data),
        "config": {
            "type": algo.config.get_type(),
            "params": json.loads(algo.config.serialize()),
        },
        **_provenance(started),
    }
    if held is not None:  # after the seen record: nothing above may change
        overrides = settings.overrides.get(method, {})
        record["unseen"] = evaluate_unseen(
            algo, method, overrides, held, evaluations.evaluator
        )
        record["finished_at"] = _now()
    return _jsonable(record), algo
