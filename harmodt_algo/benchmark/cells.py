"""One cell of a matrix: a (dataset, method, seed) trained from scratch for the
shared budget and evaluated on its final checkpoint, as a JSON record.

The record is the unit of resumption (a finished cell is never recomputed) and
of the report, so it carries everything a reader needs to judge it: the
budget that must match for reuse, timings, per-task results, the model's
size, how far a HarmoDT model's masks moved, the data, the config, versions
and the host.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..baselines import baseline_policy, fit_baseline, make_baseline
from ..data import MultiTaskDataset
from ..harmodt import HarmoDT
from ..options import OptionError, parse_device
from ..summary import active_parameters, count_parameters, mask_movement
from .datasets import DatasetSpec, dataset_facts
from .errors import BenchmarkError
from .methods import (
    BASELINE_METHODS,
    HARMODT_METHODS,
    METHOD_LABELS,
    METHODS,
    check_methods,
    validate_overrides,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..evaluation import EvaluationResult, MultiTaskEvaluator

__all__ = [
    "CELL_SCHEMA",
    "BenchmarkSettings",
    "CellKey",
    "cell_path",
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
            goal (spec §7: 10).
        eval_seed: picks the held-out goals; the same for every method and
            training seed, so cells are paired.
        eval_max_steps: cut evaluation episodes (default: the env's limit).
        eval_workers: evaluator worker processes (0: in process).
        target_return: the Decision Transformers' initial return-to-go for
            every task (default: each task's best return in the dataset).
        device: ``cpu`` or ``cuda:N``.
        overrides: per method, config options (e.g. ``{"mtbc":
            {"batch_size": 64}}``), part of the cell's budget.
        save_models: also save the final model next to the cell
            (``seed<k>.d3``).
        threads: ``torch.set_num_threads`` (default: torch's choice).
        curve_every: HarmoDT presets also evaluate (same goals) every this
            many steps before the end, recorded as the cell's ``curve``: the
            learning curve that shows whether the budget has converged.
    """

    steps: int
    eval_episodes: int = 10
    eval_seed: int = 0
    eval_max_steps: int | None = None
    eval_workers: int = 0
    target_return: float | None = None
    device: str = "cpu"
    overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    save_models: bool = False
    threads: int | None = None
    curve_every: int | None = None

    def validate(self) -> None:
        for name in ("steps", "eval_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BenchmarkError(f"{name} must be a positive int, got {value!r}")
        if self.eval_max_steps is not None and self.eval_max_steps <= 0:
            raise BenchmarkError(
                f"eval_max_steps must be > 0, got {self.eval_max_steps}"
            )
        if self.eval_workers < 0:
            raise BenchmarkError(f"eval_workers must be >= 0, got {self.eval_workers}")
        if self.threads is not None and self.threads <= 0:
            raise BenchmarkError(f"threads must be > 0, got {self.threads}")
        if self.curve_every is not None and not 0 < self.curve_every < self.steps:
            raise BenchmarkError(
                f"curve_every must be in (0, steps = {self.steps}), got "
                f"{self.curve_every}"
            )
        unknown = sorted(set(self.overrides) - set(METHODS))
        if unknown:
            raise BenchmarkError(
                f"overrides for unknown method(s) {unknown}; valid methods: "
                f"{', '.join(METHODS)}"
            )
        for method, options in self.overrides.items():
            validate_overrides(method, options)
        _torch_device(self.device)

    def budget(self, method: str) -> dict[str, Any]:
        """What must match for a finished cell to be reused."""
        return {
            "steps": self.steps,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.eval_seed,
            "eval_max_steps": self.eval_max_steps,
            "target_return": self.target_return,
            "overrides": _jsonable(dict(self.overrides.get(method, {}))),
            **({"curve_every": self.curve_every} if self.curve_every else {}),
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


@dataclasses.dataclass
class _Evaluations:
    """Every evaluation of one cell, so the learning curve and the final
    result use the same held-out goals and targets; the curve's time is kept
    apart, because it is not training time."""

    minari_dataset: Any
    data: MultiTaskDataset
    settings: BenchmarkSettings
    curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    curve_time: float = 0.0

    def evaluator(self) -> MultiTaskEvaluator:
        """The cell's evaluator: the same goals at every point of the curve."""
        from ..evaluation import MultiTaskEvaluator

        settings = self.settings
        targets = (
            self.data if settings.target_return is None else settings.target_return
        )
        return MultiTaskEvaluator(
            self.minari_dataset,
            n_episodes=settings.eval_episodes,
            seed=settings.eval_seed,
            max_steps=settings.eval_max_steps,
            target_returns=targets,
            workers=settings.eval_workers,
        )

    def curve_point(self, model: HarmoDT) -> float:
        """A ``fit`` evaluator: one point of the learning curve."""
        if model.grad_step >= self.settings.steps:  # the cell's own evaluation follows
            return self.curve[-1]["success_mean"] if self.curve else math.nan
        t = time.perf_counter()
        with self.evaluator() as evaluator:
            success = evaluator.evaluate(evaluator.policy_for(model)).success_mean
        self.curve.append({"step": model.grad_step, "success_mean": success})
        self.curve_time += time.perf_counter() - t
        return success

    def final(self, algo: Any) -> tuple[EvaluationResult, Any]:
        """The final checkpoint's result and the targets it was given."""
        with self.evaluator() as evaluator:
            targets = evaluator.target_returns()
            if isinstance(algo, HarmoDT):
                policy: Any = evaluator.policy_for(algo)
            else:
                policy = baseline_policy(algo, self.data.task_names, targets)
            return evaluator.evaluate(policy), targets


def _fit_harmodt(
    method: str,
    data: MultiTaskDataset,
    seed: int,
    device: Any,
    capture: _CaptureFactory,
    evaluations: _Evaluations,
) -> tuple[HarmoDT, torch.Tensor]:
    """Train a HarmoDT preset; returns it and its initial (T, N) masks."""
    settings = evaluations.settings
    overrides = dict(settings.overrides.get(method, {}))
    algo = HarmoDT.from_preset(method, device=device, **{**overrides, "seed": seed})
    algo.build_with_dataset(data)  # the model fit will train, masks as drawn
    assert algo.impl is not None
    initial_masks = algo.impl.flat_masks().clone()  # (T, N)
    algo.fit(
        data,
        n_steps=settings.steps,
        n_steps_per_epoch=settings.curve_every or settings.steps,
        experiment_name=f"benchmark_{method}",
        with_timestamp=False,
        logger_adapter=capture,
        show_progress=False,
        evaluators={"curve": evaluations.curve_point} if settings.curve_every else None,
    )
    return algo, initial_masks


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


def _fit(
    method: str,
    data: MultiTaskDataset,
    seed: int,
    device: Any,
    capture: _CaptureFactory,
    evaluations: _Evaluations,
) -> tuple[Any, torch.Tensor | None]:
    """Train ``method``; returns the model and, for HarmoDT, its initial masks."""
    if method in HARMODT_METHODS:
        return _fit_harmodt(method, data, seed, device, capture, evaluations)
    if method in BASELINE_METHODS:
        settings = evaluations.settings
        return _fit_baseline(method, data, device, capture, settings), None
    check_methods([method])  # raises with the valid names
    raise AssertionError(method)  # pragma: no cover


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


def _versions() -> dict[str, str]:
    out = {"harmodt": __version__, "python": platform.python_version()}
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
    evaluations: _Evaluations,
    targets: Any,
    capture: _CaptureFactory,
) -> dict[str, Any]:
    """The final evaluation (and the learning curve that leads to it)."""
    curve = evaluations.curve
    final = {"step": evaluations.settings.steps, "success_mean": result.success_mean}
    return {
        "success_mean": result.success_mean,
        "curve": [*curve, final] if curve else None,
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


def run_cell(
    method: str,
    dataset: DatasetSpec,
    minari_dataset: Any,
    data: MultiTaskDataset,
    seed: int,
    settings: BenchmarkSettings,
) -> tuple[dict[str, Any], Any]:
    """Train ``method`` on ``data`` for ``settings.steps`` steps with ``seed``,
    evaluate the final model; returns (the cell record, the fitted algorithm).
    Writes nothing."""
    import d3rlpy
    import torch

    device = _torch_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = _now()
    capture = _CaptureFactory()
    evaluations = _Evaluations(minari_dataset, data, settings)
    d3rlpy.seed(seed)
    t0 = time.perf_counter()
    algo, initial_masks = _fit(method, data, seed, device, capture, evaluations)
    if device is not False and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    train_time = time.perf_counter() - t0 - evaluations.curve_time

    t1 = time.perf_counter()
    result, targets = evaluations.final(algo)
    eval_time = time.perf_counter() - t1

    is_dt = isinstance(algo, HarmoDT) or method == "mtdt-d3rlpy"
    record: dict[str, Any] = {
        **_identity(method, dataset, seed, settings, algo, capture),
        **_model_facts(algo, initial_masks, data),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        **_results(result, evaluations, targets if is_dt else None, capture),
        "dataset": dataset_facts(minari_dataset, data),
        "config": {
            "type": algo.config.get_type(),
            "params": json.loads(algo.config.serialize()),
        },
        **_provenance(started),
    }
    return _jsonable(record), algo
