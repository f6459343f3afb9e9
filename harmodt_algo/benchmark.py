"""The benchmark harness: methods x datasets x seeds, resumable, then a report.

Why this module exists: the paper's Table 1 compares HarmoDT with multi-task
baselines, but its numbers come from other data (Meta-World v2 replay buffers),
other code and best-checkpoint selection. The only comparison this project can
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
A HarmoDT cell also records how far its masks moved (``masks``: per-task drift
from the initial masks, mean pairwise overlap before and after), because
whether the harmony score changes anything is the question a result raises.

:func:`report` turns a results folder into a markdown table in the shape of
the paper's Table 1 (mean ± std over seeds of the mean success %, one column
per suite x quality, plus wall time), CSVs of every cell and every task, and
PNG figures (success per dataset with error bars; per-task success heat maps).

Command line (``main(argv)``; ``harmodt benchmark ...`` may delegate to it)::

    python -m harmodt_algo.benchmark run --methods harmodt-f,mtdt,mtbc \\
        --datasets metaworld-v3/mt5/near-optimal-v0 --seeds 0,1,2 --steps 5000 \\
        --out results/
    python -m harmodt_algo.benchmark report results/ --out docs/benchmarks
    python -m harmodt_algo.benchmark list

Timing: ``train_time_s`` covers building the method's model and replay data
and its ``fit``; ``eval_time_s`` covers building the evaluation environments
(a fresh evaluator per cell, so every cell pays the same) and the episodes.
Loading the Minari dataset is shared by the cells of a dataset and not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from . import __version__
from ._quiet import d3rlpy_warnings_only
from .baselines import (
    BASELINES,
    HIDDEN_UNITS_KEY,
    baseline_config,
    baseline_policy,
    fit_baseline,
    make_baseline,
)
from .data import MultiTaskDataset, as_multitask_dataset
from .files import write_json_atomic
from .harmodt import PRESETS, HarmoDT, HarmoDTConfig
from .options import OptionError, parse_device, parse_list, parse_value
from .summary import active_parameters, count_parameters, mask_movement

__all__ = [
    "BenchmarkError",
    "BenchmarkSettings",
    "CellKey",
    "DatasetSpec",
    "HARMODT_METHODS",
    "BASELINE_METHODS",
    "METHODS",
    "METHOD_LABELS",
    "MatrixSummary",
    "PAPER_TABLE1",
    "cell_path",
    "check_methods",
    "count_parameters",
    "ensure_dataset",
    "load_cells",
    "main",
    "parse_dataset",
    "report",
    "run_cell",
    "run_matrix",
]

#: Version of the cell JSON layout.
CELL_SCHEMA = 1
#: HarmoDT presets benchmarked (``HarmoDT.from_preset``), in table order.
HARMODT_METHODS: tuple[str, ...] = (
    "harmodt-f",
    "harmodt-m",
    "harmodt-r",
    "harmodt-f-v0",
    "harmodt-f-release",
    "harmodt-plus",
    "sparse-static",
    "mtdt",
    "prompt-dt",
)
#: d3rlpy baselines through the one-hot adapter (``baselines.make_baseline``).
BASELINE_METHODS: tuple[str, ...] = tuple(BASELINES)
METHODS: tuple[str, ...] = HARMODT_METHODS + BASELINE_METHODS
METHOD_LABELS: dict[str, str] = {
    "harmodt-f": "HarmoDT-F",
    "harmodt-m": "HarmoDT-M",
    "harmodt-r": "HarmoDT-R",
    "harmodt-f-v0": "HarmoDT-F (v0)",
    "harmodt-f-release": "HarmoDT-F (release-sized)",
    "harmodt-plus": "HarmoDT+",
    "sparse-static": "Sparse-static",
    "mtdt": "MTDT",
    "prompt-dt": "Prompt-DT",
    **{name: spec.label for name, spec in BASELINES.items()},
}
assert set(HARMODT_METHODS) == set(PRESETS), "a HarmoDT preset is not benchmarked"

#: The paper's Table 1 (success %, Meta-World v2 data, 3 seeds; spec §9),
#: keyed by method label and (suite, quality). A reference for the size of the
#: gaps between methods, not a target: the data differ.
PAPER_TABLE1: dict[str, dict[tuple[str, str], float]] = {
    "MTBC": {("MT50", "near-optimal"): 60.39, ("MT50", "sub-optimal"): 34.53},
    "MTIQL": {("MT50", "near-optimal"): 56.21, ("MT50", "sub-optimal"): 43.28},
    "MTDT": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 64.67,
        ("MT30", "near-optimal"): 71.89,
        ("MT30", "sub-optimal"): 49.33,
        ("MT50", "near-optimal"): 65.80,
        ("MT50", "sub-optimal"): 42.33,
    },
    "Prompt-DT": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 67.00,
        ("MT30", "near-optimal"): 71.30,
        ("MT30", "sub-optimal"): 54.33,
        ("MT50", "near-optimal"): 71.60,
        ("MT50", "sub-optimal"): 51.40,
    },
    "HarmoDT-R": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 68.00,
        ("MT30", "near-optimal"): 80.10,
        ("MT30", "sub-optimal"): 59.00,
        ("MT50", "near-optimal"): 74.24,
        ("MT50", "sub-optimal"): 52.45,
    },
    "HarmoDT-M": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 72.12,
        ("MT30", "near-optimal"): 79.67,
        ("MT30", "sub-optimal"): 62.33,
        ("MT50", "near-optimal"): 78.80,
        ("MT50", "sub-optimal"): 56.20,
    },
    "HarmoDT-F": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 75.04,
        ("MT30", "near-optimal"): 81.60,
        ("MT30", "sub-optimal"): 60.60,
        ("MT50", "near-optimal"): 77.80,
        ("MT50", "sub-optimal"): 57.50,
    },
}

#: Short quality names for table columns ("MT5 near", like the paper).
QUALITY_SHORT = {
    "expert": "expert",
    "near-optimal": "near",
    "sub-optimal": "sub",
    "random": "random",
}
_SUITE_ORDER = ("MT1", "MT5", "MT10", "MT30", "MT50")
_QUALITY_ORDER = ("expert", "near-optimal", "sub-optimal", "random")
#: Config fields the harness owns (set per cell, never overridden).
_RESERVED_OPTIONS = frozenset({"seed", "task_names"})

Log = Callable[[str], None]


class BenchmarkError(ValueError):
    """Bad input to the harness (unknown method, missing dataset, mismatched
    budget of an existing cell, ...); the message says what to do."""


# --------------------------------------------------------------------------- #
# Methods
# --------------------------------------------------------------------------- #


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """Normalised method names (``"all"`` = every method); unknown names raise
    :class:`BenchmarkError` listing the valid ones."""
    try:
        items = (
            parse_list("--methods", methods)
            if isinstance(methods, str)
            else list(methods)
        )
    except OptionError as exc:
        raise BenchmarkError(str(exc)) from None
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name == "all":
            names.extend(METHODS)
        elif name not in METHODS:
            raise BenchmarkError(
                f"unknown method {item.strip()!r}; valid methods: "
                f"{', '.join(METHODS)} (or 'all')"
            )
        else:
            names.append(name)
    if not names:
        raise BenchmarkError(f"no methods given; valid methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def method_options(method: str) -> set[str]:
    """The override keys ``method`` accepts (its config fields)."""
    if method in HARMODT_METHODS:
        fields = {f.name for f in dataclasses.fields(HarmoDTConfig)}
    else:
        config = baseline_config(method)
        fields = {f.name for f in dataclasses.fields(config)} | {HIDDEN_UNITS_KEY}
    return fields - _RESERVED_OPTIONS


def _validate_overrides(method: str, overrides: Mapping[str, Any]) -> None:
    reserved = sorted(set(overrides) & _RESERVED_OPTIONS)
    if reserved:
        raise BenchmarkError(
            f"{method}: {reserved} are set by the harness (the seed comes from "
            "--seeds, the tasks from the dataset)"
        )
    try:
        if method in HARMODT_METHODS:
            HarmoDTConfig.from_preset(method, **overrides).validate()
        else:
            baseline_config(method, **overrides)
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{method}: bad option: {exc}") from None


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the matrix: its Minari id and, when known, the recipe that
    builds it (``suite`` or ``tasks``, ``quality``)."""

    dataset_id: str
    quality: str | None = None
    suite: str | None = None
    tasks: tuple[str, ...] | None = None
    #: given as ``SUITE:quality``: built with the recipes when missing
    auto_build: bool = False

    @property
    def slug(self) -> str:
        """Folder name of the dataset's cells."""
        return self.dataset_id.replace("/", "__")

    @property
    def buildable(self) -> bool:
        return self.quality is not None and (
            self.suite is not None or self.tasks is not None
        )

    def recipe_args(self) -> str:
        """``harmodt-recipes metaworld`` arguments that build it."""
        if self.suite is not None:
            where = f"--suite {self.suite}"
        elif self.tasks is not None and len(self.tasks) == 1:
            where = f"--suite MT1 --tasks {self.tasks[0]}"
        else:
            where = f"--tasks {','.join(self.tasks or ('<tasks>',))}"
        return f"{where} --quality {self.quality}"


def parse_dataset(text: str) -> DatasetSpec:
    """``metaworld-v3/mt5/near-optimal-v0`` (a dataset id) or ``MT5:near-optimal``
    (a suite, or a task list joined by ``+`` or ``,``, and a quality: built
    with the recipes when missing)."""
    from dataset_recipes import RecipeError, dataset_id, parse_dataset_id
    from dataset_recipes.suites import FIXED_SUITES, parse_task_list

    value = text.strip()
    if not value:
        raise BenchmarkError("empty dataset name")
    if ":" in value:
        where, quality = (part.strip() for part in value.split(":", 1))
        where = where.replace("+", ",")
        try:
            ident = dataset_id(where, quality)
            if where.upper() in FIXED_SUITES:
                return DatasetSpec(
                    ident, quality=quality, suite=where.upper(), auto_build=True
                )
            tasks = parse_task_list(where)
        except RecipeError as exc:
            raise BenchmarkError(f"bad dataset {value!r}: {exc}") from None
        return DatasetSpec(ident, quality=quality, tasks=tasks, auto_build=True)
    if "/" not in value:
        raise BenchmarkError(
            f"bad dataset {value!r}: give a Minari dataset id such as "
            "metaworld-v3/mt5/near-optimal-v0, or SUITE:quality such as "
            "MT5:near-optimal (built with the recipes when missing)"
        )
    recipe = parse_dataset_id(value)
    if recipe is None:
        return DatasetSpec(value)
    if recipe.suite is not None:
        return DatasetSpec(value, quality=recipe.quality, suite=recipe.suite)
    if recipe.task is not None:
        return DatasetSpec(value, quality=recipe.quality, tasks=(recipe.task,))
    return DatasetSpec(value, quality=recipe.quality)


def _missing_message(spec: DatasetSpec) -> str:
    from dataset_recipes import datasets_root

    head = f"no local dataset {spec.dataset_id!r} under {datasets_root()}"
    if spec.buildable:
        return (
            f"{head}; build it with 'harmodt-recipes metaworld {spec.recipe_args()} "
            "--episodes-per-task N', or rerun with --build-missing (the harness "
            "builds it with --episodes-per-task)"
        )
    if spec.quality is not None:
        return (
            f"{head}; build it with 'harmodt-recipes metaworld --tasks <the same "
            f"comma-separated task list> --quality {spec.quality}', or pass "
            "'<task,task,...>:<quality>' to let the harness build it"
        )
    return (
        f"{head}; build a recipe dataset with e.g. 'harmodt-recipes metaworld "
        "--suite MT5 --quality near-optimal', or pass MT5:near-optimal to let the "
        "harness build it"
    )


def ensure_dataset(
    spec: DatasetSpec,
    *,
    build: bool = False,
    episodes_per_task: int = 100,
    recipe_seed: int = 0,
    max_episode_steps: int | None = None,
    log: Log | None = None,
) -> Any:
    """The local Minari dataset of ``spec``; built with the recipes when it is
    missing and ``build`` (or ``spec.auto_build``) allows, else
    :class:`BenchmarkError` saying how to build it."""
    import minari

    try:
        existing = minari.load_dataset(spec.dataset_id)
    except FileNotFoundError:
        if not ((build or spec.auto_build) and spec.buildable):
            raise BenchmarkError(_missing_message(spec)) from None
    else:
        recipe = dict(existing.storage.metadata).get("recipe") or {}
        have = recipe.get("episodes_per_task") if isinstance(recipe, Mapping) else None
        if log and spec.auto_build and have is not None and have != episodes_per_task:
            log(
                f"note: using the existing {spec.dataset_id} with {have} episodes per "
                f"task (asked {episodes_per_task}); delete it to rebuild"
            )
        return existing
    from dataset_recipes import build_metaworld_dataset

    if log:
        log(
            f"building {spec.dataset_id} with the recipes ({spec.recipe_args()}, "
            f"{episodes_per_task} episodes per task)"
        )
    kwargs: dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    built = build_metaworld_dataset(
        suite=spec.suite,
        tasks=None if spec.suite is not None else list(spec.tasks or ()),
        quality=str(spec.quality),
        episodes_per_task=episodes_per_task,
        seed=recipe_seed,
        progress=False,
        **kwargs,
    )
    if built.dataset_id != spec.dataset_id:  # pragma: no cover - recipe ids agree
        raise BenchmarkError(
            f"the recipe built {built.dataset_id}, expected {spec.dataset_id}"
        )
    return minari.load_dataset(spec.dataset_id)


def _dataset_facts(minari_dataset: Any, data: MultiTaskDataset) -> dict[str, Any]:
    """What a cell records about its data (from the recipe metadata)."""
    metadata = dict(minari_dataset.storage.metadata)
    recipe = metadata.get("recipe") or {}
    recipe = dict(recipe) if isinstance(recipe, Mapping) else {}
    return {
        "suite": recipe.get("suite"),
        "quality": recipe.get("quality"),
        "recipe_seed": recipe.get("seed"),
        "episodes_per_task": recipe.get("episodes_per_task"),
        "max_episode_steps": recipe.get("max_episode_steps"),
        "tasks": list(data.task_names),
        "episodes": int(sum(data.num_episodes(t) for t in data.task_names)),
        "transitions": int(sum(data.num_transitions(t) for t in data.task_names)),
    }


# --------------------------------------------------------------------------- #
# Settings and cells
# --------------------------------------------------------------------------- #


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
            _validate_overrides(method, options)
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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _torch_device(device: str) -> Any:
    """``cpu`` → False (d3rlpy's CPU), ``cuda``/``cuda:N`` → ``cuda:N``."""
    try:
        return parse_device(device)
    except OptionError as exc:
        raise BenchmarkError(f"--device: {exc}") from None


def _reproducibility(algo: HarmoDT, data: MultiTaskDataset) -> dict[str, Any] | None:
    """For a model whose masks are rewired: how reproducible its final mask
    update's choice is (two independent estimates; see reproducibility.py)."""
    if not (algo.config.uses_masks and algo.config.mask_interval > 0):
        return None
    from .reproducibility import mask_reproducibility

    t = time.perf_counter()
    out = mask_reproducibility(algo, data)
    return {**out, "time_s": time.perf_counter() - t}


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

    from .evaluation import MultiTaskEvaluator

    device = _torch_device(settings.device)
    overrides = dict(settings.overrides.get(method, {}))
    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = _now()
    capture = _CaptureFactory()
    d3rlpy.seed(seed)
    t0 = time.perf_counter()
    algo: Any
    initial_masks = None
    curve: list[dict[str, float]] = []
    curve_time = 0.0
    targets_source = data if settings.target_return is None else settings.target_return

    def make_evaluator() -> MultiTaskEvaluator:
        """The cell's evaluator: the same goals at every point of the curve."""
        return MultiTaskEvaluator(
            minari_dataset,
            n_episodes=settings.eval_episodes,
            seed=settings.eval_seed,
            max_steps=settings.eval_max_steps,
            target_returns=targets_source,
            workers=settings.eval_workers,
        )

    def curve_point(model: HarmoDT) -> float:
        nonlocal curve_time
        if model.grad_step >= settings.steps:  # the cell's own evaluation follows
            return curve[-1]["success_mean"] if curve else math.nan
        t = time.perf_counter()
        with make_evaluator() as evaluator:
            success = evaluator.evaluate(evaluator.policy_for(model)).success_mean
        curve.append({"step": model.grad_step, "success_mean": success})
        curve_time += time.perf_counter() - t
        return success

    if method in HARMODT_METHODS:
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
            evaluators={"curve": curve_point} if settings.curve_every else None,
        )
    elif method in BASELINE_METHODS:
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
    else:
        check_methods([method])  # raises with the valid names
        raise AssertionError(method)  # pragma: no cover
    if device is not False and str(device).startswith("cuda"):
        torch.cuda.synchronize()
    train_time = time.perf_counter() - t0 - curve_time

    t1 = time.perf_counter()
    with make_evaluator() as evaluator:
        targets = evaluator.target_returns()
        if isinstance(algo, HarmoDT):
            policy: Any = evaluator.policy_for(algo)
        else:
            policy = baseline_policy(algo, data.task_names, targets)
        result = evaluator.evaluate(policy)
    eval_time = time.perf_counter() - t1

    is_dt = isinstance(algo, HarmoDT) or method == "mtdt-d3rlpy"
    record: dict[str, Any] = {
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
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "success_mean": result.success_mean,
        "curve": [*curve, {"step": settings.steps, "success_mean": result.success_mean}]
        if curve
        else None,
        "return_mean": result.return_mean,
        "success": {r.task: r.success_rate for r in result.tasks},
        "return": {r.task: r.mean_return for r in result.tasks},
        "target_returns": targets if is_dt else None,
        "final_metrics": capture.last.get("metrics", {}),
        "evaluation": result.to_dict(),
        "dataset": _dataset_facts(minari_dataset, data),
        "config": {
            "type": algo.config.get_type(),
            "params": json.loads(algo.config.serialize()),
        },
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
    return _jsonable(record), algo


def _read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "success_mean" not in data:
        return None
    return data


@dataclasses.dataclass
class MatrixSummary:
    """What a :func:`run_matrix` call did."""

    ran: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _as_spec(dataset: DatasetSpec | str) -> DatasetSpec:
    return dataset if isinstance(dataset, DatasetSpec) else parse_dataset(dataset)


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    out: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise BenchmarkError(f"seeds must be ints, got {seed!r}")
        if seed < 0:
            raise BenchmarkError(f"seeds must be >= 0, got {seed}")
        out.append(int(seed))
    if not out:
        raise BenchmarkError("no seeds given")
    return list(dict.fromkeys(out))


def run_matrix(
    methods: str | Sequence[str],
    datasets: Sequence[DatasetSpec | str],
    seeds: Sequence[int],
    out: str | Path,
    settings: BenchmarkSettings,
    *,
    build_missing: bool = False,
    episodes_per_task: int = 100,
    recipe_seed: int = 0,
    max_episode_steps: int | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    quiet: bool = True,
    log: Log | None = None,
) -> MatrixSummary:
    """Run every missing cell of methods x datasets x seeds into ``out``.

    Everything is validated before any training (methods, datasets, seeds,
    options, device, and the budget of finished cells: a finished cell made
    with another budget raises, ``overwrite=True`` recomputes every cell).
    Finished cells are skipped and logged. A failing cell is logged and the
    matrix goes on (``fail_fast`` re-raises); it writes nothing, so a rerun
    retries it.
    """
    say: Log = log or (lambda text: print(text, flush=True))
    names = check_methods(methods)
    specs = [_as_spec(d) for d in datasets]
    if not specs:
        raise BenchmarkError("no datasets given")
    specs = list(dict.fromkeys(specs))
    seed_list = _check_seeds(seeds)
    settings.validate()
    root = Path(out)

    # seeds outer: a matrix stopped part-way has every method for its first seeds
    cells = [CellKey(s, m, k) for s in specs for k in seed_list for m in names]
    finished: dict[CellKey, Path] = {}
    mismatched: list[str] = []
    for cell in cells:
        path = cell_path(root, cell.dataset, cell.method, cell.seed)
        if overwrite or not path.exists():
            continue
        record = _read_cell(path)
        if record is None:
            say(f"recomputing {cell}: {path} is unreadable")
            continue
        if record.get("budget") != settings.budget(cell.method):
            mismatched.append(
                f"{path} (has {record.get('budget')}, asked "
                f"{settings.budget(cell.method)})"
            )
            continue
        finished[cell] = path
    if mismatched:
        raise BenchmarkError(
            "finished cells were made with a different budget: "
            + "; ".join(mismatched[:3])
            + ("" if len(mismatched) <= 3 else f"; and {len(mismatched) - 3} more")
            + ". Use another --out, or --overwrite to recompute them"
        )

    summary = MatrixSummary()
    total = len(cells)
    quiet_ctx = d3rlpy_warnings_only() if quiet else contextlib.nullcontext()
    with quiet_ctx:
        number = 0
        for spec in specs:
            todo = [c for c in cells if c.dataset == spec and c not in finished]
            for cell in cells:
                if cell.dataset == spec and cell in finished:
                    number += 1
                    summary.skipped.append(finished[cell])
                    say(f"[{number}/{total}] skip {cell}: finished ({finished[cell]})")
            if not todo:
                continue
            minari_dataset = ensure_dataset(
                spec,
                build=build_missing,
                episodes_per_task=episodes_per_task,
                recipe_seed=recipe_seed,
                max_episode_steps=max_episode_steps,
                log=say,
            )
            data = as_multitask_dataset(minari_dataset)
            for cell in todo:
                number += 1
                path = cell_path(root, spec, cell.method, cell.seed)
                say(f"[{number}/{total}] run {cell}: {settings.steps} steps ...")
                try:
                    record, algo = run_cell(
                        cell.method, spec, minari_dataset, data, cell.seed, settings
                    )
                except Exception as exc:
                    if fail_fast:
                        raise
                    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
                    summary.failed.append((str(cell), reason))
                    say(f"[{number}/{total}] FAILED {cell}: {reason[:300]}")
                    say(traceback.format_exc(limit=4))
                    continue
                if settings.save_models:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    algo.save(str(path.with_suffix(".d3")))
                write_json_atomic(path, record, indent=1)
                summary.ran.append(path)
                say(
                    f"[{number}/{total}] done {cell}: success "
                    f"{100 * record['success_mean']:.1f}% (train "
                    f"{record['train_time_s']:.1f} s, eval "
                    f"{record['eval_time_s']:.1f} s) -> {path}"
                )
    say(
        f"ran {len(summary.ran)} cell(s), skipped {len(summary.skipped)} finished, "
        f"{len(summary.failed)} failed"
    )
    return summary


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def load_cells(results: str | Path) -> list[dict[str, Any]]:
    """Every finished cell under ``results`` (``*/*/seed*.json``)."""
    root = Path(results)
    if not root.is_dir():
        raise BenchmarkError(f"no results folder {str(root)!r}")
    cells = []
    for path in sorted(root.glob("*/*/seed*.json")):
        record = _read_cell(path)
        if record is not None:
            record["_path"] = str(path)
            cells.append(record)
    return cells


@dataclasses.dataclass(frozen=True)
class _Column:
    """One dataset column of the table."""

    dataset_id: str
    suite: str | None
    quality: str | None
    label: str

    def sort_key(self) -> tuple[int, int, str]:
        suite = _SUITE_ORDER.index(self.suite) if self.suite in _SUITE_ORDER else 99
        quality = (
            _QUALITY_ORDER.index(self.quality) if self.quality in _QUALITY_ORDER else 99
        )
        return (suite, quality, self.dataset_id)


def _columns(cells: Sequence[Mapping[str, Any]]) -> list[_Column]:
    from dataset_recipes import parse_dataset_id

    seen: dict[str, _Column] = {}
    for cell in cells:
        ident = str(cell["dataset_id"])
        if ident in seen:
            continue
        facts = cell.get("dataset") or {}
        suite = facts.get("suite")
        quality = facts.get("quality")
        recipe = parse_dataset_id(ident)
        group = str(suite) if suite else (recipe.group if recipe else ident)
        short = QUALITY_SHORT.get(str(quality), str(quality)) if quality else ""
        label = f"{group} {short}".strip()
        seen[ident] = _Column(ident, suite, quality, label)
    columns = sorted(seen.values(), key=_Column.sort_key)
    labels = [c.label for c in columns]
    return [
        dataclasses.replace(c, label=c.dataset_id) if labels.count(c.label) > 1 else c
        for c in columns
    ]


def _method_order(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {str(c["method"]) for c in cells}
    known = [m for m in METHODS if m in present]
    return known + sorted(present - set(known))


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population, ddof 0) standard deviation."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _fmt_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _group(
    cells: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[(str(cell["dataset_id"]), str(cell["method"]))].append(cell)
    for group in groups.values():
        group.sort(key=lambda c: int(c["seed"]))
    return groups


def _markdown(
    cells: Sequence[Mapping[str, Any]],
    columns: Sequence[_Column],
    methods: Sequence[str],
) -> str:
    groups = _group(cells)
    lines = ["# Benchmark results", ""]
    steps = sorted({int(c["budget"]["steps"]) for c in cells})
    episodes = sorted({int(c["budget"]["eval_episodes"]) for c in cells})
    devices = sorted({str(c.get("device", "?")) for c in cells})
    lines += [
        "Mean success rate over tasks (%) of the **final** checkpoint, mean ± std "
        "(ddof 0) over training seeds; every method trained on the same data for "
        f"the same number of gradient steps ({', '.join(map(str, steps))}) and "
        f"evaluated by the same multi-task evaluator ({', '.join(map(str, episodes))} "
        "held-out goal(s) per task, the same goals for every method and seed). "
        f"Device: {', '.join(devices)}. `(n=k)` marks a cell with fewer seeds than "
        "its column's most. Time: mean wall time per cell, train + evaluation.",
        "",
    ]
    header = ["method", *[c.label for c in columns], "time / cell (train + eval)"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|")
    most = {
        c.dataset_id: max(
            (len(groups.get((c.dataset_id, m), [])) for m in methods), default=0
        )
        for c in columns
    }
    for method in methods:
        row = [METHOD_LABELS.get(method, method)]
        times_train: list[float] = []
        times_eval: list[float] = []
        for column in columns:
            group = groups.get((column.dataset_id, method), [])
            if not group:
                row.append("—")
                continue
            mean, std = _stats([100 * float(c["success_mean"]) for c in group])
            text = f"{mean:.1f}" if len(group) == 1 else f"{mean:.1f} ± {std:.1f}"
            if len(group) < most[column.dataset_id]:
                text += f" (n={len(group)})"
            row.append(text)
            times_train += [float(c["train_time_s"]) for c in group]
            times_eval += [float(c["eval_time_s"]) for c in group]
        if times_train:
            train, evaluation = float(np.mean(times_train)), float(np.mean(times_eval))
            row.append(
                f"{_fmt_time(train + evaluation)} ({_fmt_time(train)} + "
                f"{_fmt_time(evaluation)})"
            )
        else:
            row.append("—")
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Seeds and data", ""]
    lines.append("| dataset | tasks | episodes / task | transitions | seeds |")
    lines.append("|---|---:|---:|---:|---|")
    for column in columns:
        group = [c for c in cells if c["dataset_id"] == column.dataset_id]
        facts = group[0].get("dataset") or {}
        seeds = sorted({int(c["seed"]) for c in group})
        lines.append(
            f"| `{column.dataset_id}` | {len(facts.get('tasks') or [])} | "
            f"{facts.get('episodes_per_task', '?')} | "
            f"{facts.get('transitions', '?')} | {', '.join(map(str, seeds))} |"
        )

    lines += ["", "## Parameters", ""]
    lines.append("| method | parameters | active per task | batch size |")
    lines.append("|---|---:|---:|---:|")
    for method in methods:
        group = [c for c in cells if c["method"] == method]
        params = sorted({int(c["param_count"]) for c in group})
        active = [c.get("active_param_count") for c in group]
        active_vals = [float(a) for a in active if a is not None]
        batches = sorted({int(c["batch_size"]) for c in group})
        lines.append(
            f"| {METHOD_LABELS.get(method, method)} | "
            f"{' / '.join(f'{p:,}' for p in params)} | "
            f"{f'{np.mean(active_vals):,.0f}' if active_vals else '—'} | "
            f"{', '.join(map(str, batches))} |"
        )

    for column in columns:
        tasks = list((_first(cells, column.dataset_id).get("success") or {}).keys())
        lines += ["", f"## Per-task success (%): {column.label}", ""]
        lines.append("| method | " + " | ".join(tasks) + " |")
        lines.append("|" + "|".join(["---", *["---:"] * len(tasks)]) + "|")
        for method in methods:
            group = groups.get((column.dataset_id, method), [])
            if not group:
                continue
            values = [f"{_task_success(group, t):.0f}" for t in tasks]
            lines.append(
                f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(values) + " |"
            )

    paper_cols = [
        c
        for c in columns
        if any((c.suite, c.quality) in v for v in PAPER_TABLE1.values())
    ]
    labels = [METHOD_LABELS.get(m, m) for m in methods]
    paper_rows = [label for label in PAPER_TABLE1 if label in labels]
    if paper_cols and paper_rows:
        lines += [
            "",
            "## The paper's Table 1, same columns (reference only)",
            "",
            "Meta-World **v2** data from SAC replay buffers, best checkpoint: the "
            "absolute numbers are not comparable with the table above, only the "
            "gaps between methods are.",
            "",
            "| method | " + " | ".join(c.label for c in paper_cols) + " |",
            "|" + "|".join(["---", *["---:"] * len(paper_cols)]) + "|",
        ]
        for label in paper_rows:
            values = [
                f"{PAPER_TABLE1[label][(str(c.suite), str(c.quality))]:.2f}"
                if (c.suite, c.quality) in PAPER_TABLE1[label]
                else "—"
                for c in paper_cols
            ]
            lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _task_success(group: Sequence[Mapping[str, Any]], task: str) -> float:
    """Mean over seeds of one task's success (%)."""
    return 100 * float(np.mean([float(c["success"].get(task, np.nan)) for c in group]))


def _first(cells: Sequence[Mapping[str, Any]], dataset_id: str) -> Mapping[str, Any]:
    return next(c for c in cells if c["dataset_id"] == dataset_id)


_CELL_FIELDS = (
    "dataset_id",
    "column",
    "suite",
    "quality",
    "method",
    "label",
    "seed",
    "steps",
    "batch_size",
    "success_mean",
    "return_mean",
    "train_time_s",
    "eval_time_s",
    "param_count",
    "active_param_count",
    "eval_episodes",
    "episodes_per_task",
    "device",
    "finished_at",
    "path",
)


def _write_csvs(
    cells: Sequence[Mapping[str, Any]], columns: Sequence[_Column], out: Path
) -> list[Path]:
    label_of = {c.dataset_id: c.label for c in columns}
    cells_csv = out / "cells.csv"
    tasks_csv = out / "tasks.csv"
    with cells_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_CELL_FIELDS))
        writer.writeheader()
        for cell in cells:
            facts = cell.get("dataset") or {}
            writer.writerow(
                {
                    "dataset_id": cell["dataset_id"],
                    "column": label_of[str(cell["dataset_id"])],
                    "suite": facts.get("suite"),
                    "quality": facts.get("quality"),
                    "method": cell["method"],
                    "label": cell.get("label"),
                    "seed": cell["seed"],
                    "steps": cell["steps"],
                    "batch_size": cell.get("batch_size"),
                    "success_mean": cell["success_mean"],
                    "return_mean": cell["return_mean"],
                    "train_time_s": cell["train_time_s"],
                    "eval_time_s": cell["eval_time_s"],
                    "param_count": cell.get("param_count"),
                    "active_param_count": cell.get("active_param_count"),
                    "eval_episodes": cell["budget"]["eval_episodes"],
                    "episodes_per_task": facts.get("episodes_per_task"),
                    "device": cell.get("device"),
                    "finished_at": cell.get("finished_at"),
                    "path": cell.get("_path"),
                }
            )
    with tasks_csv.open("w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(
            ["dataset_id", "method", "seed", "task", "success_rate", "mean_return"]
        )
        for cell in cells:
            for task, success in (cell.get("success") or {}).items():
                rows.writerow(
                    [
                        cell["dataset_id"],
                        cell["method"],
                        cell["seed"],
                        task,
                        success,
                        (cell.get("return") or {}).get(task),
                    ]
                )
    return [cells_csv, tasks_csv]


def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure on an Agg canvas (files only, no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in [dev]
        raise BenchmarkError(
            "plots need matplotlib: pip install 'harmodt[plots]' (or pass --no-plots)"
        ) from exc
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _plot_bars(
    cells: Sequence[Mapping[str, Any]],
    columns: Sequence[_Column],
    methods: Sequence[str],
    path: Path,
) -> Path:
    groups = _group(cells)
    width = 0.8 / max(len(methods), 1)
    fig = _figure(figsize=(max(6.0, 1.2 + 0.35 * len(methods) * len(columns)), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(columns))
    for i, method in enumerate(methods):
        means, stds = [], []
        for column in columns:
            group = groups.get((column.dataset_id, method), [])
            if group:
                mean, std = _stats([100 * float(c["success_mean"]) for c in group])
            else:
                mean, std = math.nan, 0.0
            means.append(mean)
            stds.append(std)
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            means,
            width,
            yerr=stds,
            capsize=2,
            label=METHOD_LABELS.get(method, method),
        )
    ax.set_xticks(x)
    ax.set_xticklabels([c.label for c in columns])
    ax.set_ylabel("mean success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Final-checkpoint success, mean ± std over seeds")
    ax.legend(
        fontsize="small",
        ncols=min(len(methods), 5),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _plot_heatmap(
    cells: Sequence[Mapping[str, Any]],
    column: _Column,
    methods: Sequence[str],
    path: Path,
) -> Path:
    groups = _group(cells)
    tasks = list((_first(cells, column.dataset_id).get("success") or {}).keys())
    rows = [m for m in methods if (column.dataset_id, m) in groups]
    grid = np.full((len(rows), len(tasks)), np.nan)
    for i, method in enumerate(rows):
        group = groups[(column.dataset_id, method)]
        for j, task in enumerate(tasks):
            grid[i, j] = _task_success(group, task)
    longest = max((len(t) for t in tasks), default=10)
    fig = _figure(
        figsize=(
            max(6.0, 3.0 + 0.5 * len(tasks)),
            1.6 + 0.45 * len(rows) + 0.075 * longest,
        )
    )
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels(tasks, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([METHOD_LABELS.get(m, m) for m in rows])
    if len(tasks) <= 15:
        for i in range(len(rows)):
            for j in range(len(tasks)):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.0f}",
                        ha="center",
                        va="center",
                        color="white" if grid[i, j] < 60 else "black",
                        fontsize="small",
                    )
    fig.colorbar(image, ax=ax, label="success (%)")
    ax.set_title(f"Per-task success (%), mean over seeds\n{column.label}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def report(results: str | Path, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``benchmark.md``, ``cells.csv``, ``tasks.csv`` and (with ``plots``)
    ``success.png`` plus one ``task_success_<dataset-slug>.png`` per dataset
    into ``out``; returns the paths written."""
    cells = load_cells(results)
    if not cells:
        raise BenchmarkError(
            f"no finished cells under {str(results)!r}; run "
            "'python -m harmodt_algo.benchmark run ... --out <that folder>' first"
        )
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    columns = _columns(cells)
    methods = _method_order(cells)
    written = []
    table = target / "benchmark.md"
    table.write_text(_markdown(cells, columns, methods), encoding="utf-8")
    written.append(table)
    written += _write_csvs(cells, columns, target)
    if plots:
        written.append(_plot_bars(cells, columns, methods, target / "success.png"))
        for column in columns:
            slug = column.dataset_id.replace("/", "__")
            written.append(
                _plot_heatmap(
                    cells, column, methods, target / f"task_success_{slug}.png"
                )
            )
    return written


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #

EXIT_OK = 0
EXIT_FAILED_CELLS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "python -m harmodt_algo.benchmark"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit code 2 with the usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in parse_list("--seeds", text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints, got {text!r}"
        ) from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser (``prog`` lets another CLI embed it)."""
    parser = _Parser(
        prog=prog,
        description="Benchmark HarmoDT against multi-task baselines on recipe data.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run", help="run (or resume) a methods x datasets x seeds matrix"
    )
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
    run.add_argument("--eval-workers", type=int, default=0, help="env processes")
    run.add_argument(
        "--target-return",
        type=float,
        help="DT target return for every task (default: the task's best in the data)",
    )
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
        help="HarmoDT presets: also evaluate every N steps (a learning curve)",
    )
    run.add_argument("--report", metavar="DIR", help="write the report here afterwards")
    run.add_argument("--verbose", action="store_true", help="show d3rlpy's logs")
    # test-only: short recipe episodes
    run.add_argument("--max-episode-steps", type=int, help=argparse.SUPPRESS)

    rep = sub.add_parser(
        "report", help="markdown table, CSVs and plots of a results folder"
    )
    rep.add_argument("results", help="results folder of 'run'")
    rep.add_argument("--out", default="docs/benchmarks", help="where to write")
    rep.add_argument("--no-plots", action="store_true", help="skip the PNG figures")

    sub.add_parser("list", help="the methods and what they are")
    return parser


def _option_default(method: str, option: str) -> Any:
    """The default of ``option`` for ``method``: what types a ``--set`` value."""
    if method in HARMODT_METHODS:
        return getattr(HarmoDTConfig.from_preset(method), option)
    if option == HIDDEN_UNITS_KEY:
        return [256, 256]  # a list: parsed as JSON
    return getattr(baseline_config(method), option)


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
        if method:
            method = check_methods([method])[0]
            if method not in methods:
                raise BenchmarkError(f"--set {item!r}: {method} is not among --methods")
            targets = [method]
        else:
            targets = [m for m in methods if option in method_options(m)]
            if not targets:
                raise BenchmarkError(
                    f"--set {item!r}: no selected method has an option {option!r}"
                )
        for target in targets:
            if option not in method_options(target):
                raise BenchmarkError(
                    f"--set {item!r}: {target} has no option {option!r}; valid: "
                    f"{', '.join(sorted(method_options(target)))}"
                )
            try:
                value = parse_value(option, raw, _option_default(target, option))
            except OptionError as exc:
                raise BenchmarkError(f"--set {item!r}: {target}: {exc}") from None
            out.setdefault(target, {})[option] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    methods = check_methods(args.methods)
    try:
        datasets = parse_list("--datasets", args.datasets)
    except OptionError as exc:
        raise BenchmarkError(str(exc)) from None
    settings = BenchmarkSettings(
        steps=args.steps,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        eval_max_steps=args.eval_max_steps,
        eval_workers=args.eval_workers,
        target_return=args.target_return,
        device=args.device,
        overrides=parse_overrides(args.set, methods),
        save_models=args.save_models,
        threads=args.threads,
        curve_every=args.curve_every,
    )
    summary = run_matrix(
        methods,
        datasets,
        args.seeds,
        args.out,
        settings,
        build_missing=args.build_missing,
        episodes_per_task=args.episodes_per_task,
        recipe_seed=args.recipe_seed,
        max_episode_steps=args.max_episode_steps,
        overwrite=args.overwrite,
        fail_fast=args.fail_fast,
        quiet=not args.verbose,
    )
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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point; returns the exit code (0 ok, 1 some cells failed, 2 bad
    input, 130 interrupted: finished cells are kept, rerun to resume)."""
    args = build_parser(prog).parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "list":
            return _cmd_list()
        raise AssertionError(args.command)  # pragma: no cover
    except ValueError as exc:  # BenchmarkError, RecipeError, DatasetError
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; finished cells are kept, rerun to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
