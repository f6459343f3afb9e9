"""The held-out protocol: train on one task split, evaluate on another.

Why: the paper's second claim is that a trained HarmoDT acts on tasks it never
trained on from a few demonstrations. Meta-World's ML10/ML45 splits give the
tasks (``--datasets ML10-TRAIN:q --held-out ML10-TEST:q``); this module gives
the protocol, so that every method is adapted and scored the same way:

* the demonstrations of a test task are the **first** ``demos`` episodes of
  that task in the held-out dataset (a recipe dataset built like the training
  data; its other episodes are never used, only its own success rate is
  recorded as a reference);
* after a cell's seen-task evaluation, each adaptation method adds every test
  task to a **copy** of the trained model (:meth:`HarmoDT.add_task`), so the
  trained model, its seen results and a saved ``seed<k>.d3`` stay as they
  were;
* ``finetune`` (the upper reference) changes the shared weights, so each
  test task gets its own copy, fine-tuned on its demonstrations alone and
  scored on that task alone;
* the copy is scored on the test tasks by the cell's evaluator settings
  (episodes, seed and so goals, step limit); the target return of a test task
  is its best return among the demonstrations (all the model may know), or
  ``--target-return`` when given.

Which adaptation a method gets: MTDT (``mtdt``) acts zero-shot, Prompt-DT
(``prompt-dt``) gets the demonstrations' prompt, the other HarmoDT presets get
the ``--adapt`` methods; an adaptation a preset's config cannot take (``tune``
without a prompt) is recorded as not applicable with the reason, and so are
d3rlpy's one-hot baselines, whose task input has no slot for a new task.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..adapt import ADAPT_METHODS, SHARED_WEIGHT_METHODS, method_problem, vote_masks
from ..data import MultiTaskDataset, as_multitask_dataset
from ..harmodt import HarmoDT, HarmoDTConfig
from ..options import OptionError, parse_list
from .datasets import DatasetSpec, Log, as_spec, ensure_dataset
from .errors import BenchmarkError
from .methods import BASELINE_METHODS, METHOD_LABELS

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation import MultiTaskEvaluator

__all__ = [
    "FIXED_ADAPTATION",
    "HeldOut",
    "HeldOutData",
    "check_unseen",
    "evaluate_unseen",
    "load_held_out",
    "parse_adapt",
]

#: The baselines' own way to meet a new task (the paper's comparison).
FIXED_ADAPTATION: dict[str, str] = {"mtdt": "zero-shot", "prompt-dt": "prompt"}
#: The key under which a d3rlpy baseline records why it has no unseen result.
NO_ADD_TASK = "add_task"

EvaluatorFactory = Callable[[Any, MultiTaskDataset], "MultiTaskEvaluator"]


def parse_adapt(methods: str | Sequence[str]) -> tuple[str, ...]:
    """``vote,tune`` → ``("vote", "tune")``; an unknown name raises one line
    listing the valid ones."""
    try:
        items = parse_list("--adapt", methods) if isinstance(methods, str) else methods
    except OptionError as exc:
        raise BenchmarkError(str(exc)) from None
    names = [item.strip().lower() for item in items]
    unknown = [n for n in names if n not in ADAPT_METHODS]
    if unknown or not names:
        raise BenchmarkError(
            f"unknown adaptation method(s) {unknown}; valid: {', '.join(ADAPT_METHODS)}"
        )
    return tuple(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out settings of a matrix (part of every cell's budget).

    Attributes:
        dataset: the test tasks' dataset (a spec or what ``--datasets`` takes).
        adapt: the adaptation methods of the HarmoDT presets (``ADAPT_METHODS``).
        demos: demonstrations per test task (its first episodes).
        threshold: ``vote``/``tune``: the share of trained tasks an entry needs.
        tune_steps: ``tune``/``finetune``: Adam steps on each new task's
            demonstrations.
    """

    dataset: DatasetSpec | str
    adapt: tuple[str, ...] = ("vote", "tune")
    demos: int = 5
    threshold: float = 0.5
    tune_steps: int = 300

    @property
    def spec(self) -> DatasetSpec:
        return as_spec(self.dataset)

    def validate(self) -> None:
        """Fail before any training, one line each."""
        parse_adapt(self.adapt)
        for name in ("demos", "tune_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BenchmarkError(f"{name} must be a positive int, got {value!r}")
        try:
            vote_masks(torch.zeros((1, 1), dtype=torch.bool), self.threshold)
        except ValueError as exc:
            raise BenchmarkError(f"--vote-threshold: {exc}") from None
        self.spec  # noqa: B018  (a bad name raises here)

    def recipe_tasks(self) -> tuple[str, ...]:
        """The tasks the dataset's recipe names (its suite or task list; none
        for a dataset id of another kind, known only once loaded)."""
        from dataset_recipes.suites import suite_tasks

        spec = self.spec
        return suite_tasks(spec.suite) if spec.suite else tuple(spec.tasks or ())

    def adaptations(
        self, method: str, overrides: Mapping[str, Any]
    ) -> dict[str, str | None]:
        """``method``'s adaptation methods → why each cannot run (None: it can)."""
        if method in BASELINE_METHODS:
            return {}
        names = (FIXED_ADAPTATION[method],) if method in FIXED_ADAPTATION else None
        config = HarmoDTConfig.from_preset(method, **overrides)
        return {n: method_problem(config, n) for n in names or parse_adapt(self.adapt)}

    def budget(self, method: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """What must match for a finished cell to be reused: only what changes
        ``method``'s unseen results (a baseline's is the dataset alone)."""
        adaptations = self.adaptations(method, overrides)
        runs = [n for n, problem in adaptations.items() if problem is None]
        out: dict[str, Any] = {
            "dataset_id": self.spec.dataset_id,
            "adapt": list(adaptations),
        }
        if runs:
            out["demos"] = self.demos
        if {"vote", "tune", "finetune"} & set(runs):
            out["threshold"] = self.threshold
        if {"tune", "finetune"} & set(runs):
            out["tune_steps"] = self.tune_steps
        return out


@dataclasses.dataclass(frozen=True)
class HeldOutData:
    """The held-out dataset, loaded once per matrix: its Minari dataset (the
    evaluator's environments) and the demonstrations (first ``demos``
    episodes of each task)."""

    held_out: HeldOut
    minari_dataset: Any
    demos: MultiTaskDataset

    @property
    def tasks(self) -> list[str]:
        return list(self.demos.task_names)

    def data_success(self) -> dict[str, float] | None:
        """The dataset's own success rate per test task (recipe metadata): the
        reference a model's unseen success is read against."""
        from dataset_recipes import schema, stats_of

        metadata = dict(self.minari_dataset.storage.metadata)
        if (metadata.get(schema.METADATA_ENV) or {}).get("family") == "mujoco":
            return None  # no success signal (the MuJoCo recipes)
        stats = stats_of(metadata)
        return {s.task: float(s.success_rate) for s in stats} or None


def load_held_out(
    held_out: HeldOut,
    *,
    build: bool = False,
    episodes_per_task: int = 100,
    recipe_seed: int = 0,
    max_episode_steps: int | None = None,
    log: Log | None = None,
) -> HeldOutData:
    """Load (or build, like the training data) the held-out dataset and take
    its demonstrations; too few episodes of a task is one line."""
    spec = held_out.spec
    minari_dataset = ensure_dataset(
        spec,
        build=build,
        episodes_per_task=episodes_per_task,
        recipe_seed=recipe_seed,
        max_episode_steps=max_episode_steps,
        log=log,
    )
    data = as_multitask_dataset(minari_dataset)
    k = held_out.demos
    short = [t for t in data.task_names if data.num_episodes(t) < k]
    if short:
        have = min(data.num_episodes(t) for t in short)
        raise BenchmarkError(
            f"--demos {k}: the held-out dataset {spec.dataset_id} has only {have} "
            f"episode(s) of {short[0]}; use fewer demos or a bigger build"
        )
    demos = MultiTaskDataset.from_episodes(
        {t: list(data.episodes[i][:k]) for i, t in enumerate(data.task_names)}
    )
    return HeldOutData(held_out, minari_dataset, demos)


def check_unseen(
    train: MultiTaskDataset, dataset_id: str, held: HeldOut | HeldOutData
) -> None:
    """The test tasks must be new to the model: an overlap is one line. Given
    the settings only, the tasks their recipe names are checked, so that a
    mistake costs no build of the held-out data."""
    if isinstance(held, HeldOutData):
        tasks, spec = held.tasks, held.held_out.spec
    else:
        tasks, spec = list(held.recipe_tasks()), held.spec
    shared = [t for t in tasks if t in train.task_names]
    if shared:
        raise BenchmarkError(
            f"the held-out dataset {spec.dataset_id} shares task(s) "
            f"{', '.join(shared)} with the training dataset {dataset_id}: held-out "
            "tasks must be unseen (e.g. --datasets ML10-TRAIN:sub-optimal "
            "--held-out ML10-TEST:sub-optimal)"
        )


def _adapt_and_evaluate(
    algo: HarmoDT,
    adaptation: str,
    held: HeldOutData,
    evaluator: MultiTaskEvaluator,
) -> dict[str, Any]:
    """Every test task added to a copy of ``algo`` by ``adaptation`` (one
    copy per task for a method that moves the shared weights), then scored;
    ``algo`` is not touched."""
    settings = held.held_out
    per_task = adaptation in SHARED_WEIGHT_METHODS
    groups = [[task] for task in held.tasks] if per_task else [held.tasks]
    success: dict[str, float] = {}
    returns: dict[str, float] = {}
    adapt_time = 0.0
    for tasks in groups:
        model = copy.deepcopy(algo)
        # one task at a time is order-free: a voted row never moves the vote
        t0 = time.perf_counter()
        for task in tasks:
            model.add_task(
                task,
                {task: held.demos.episodes[held.tasks.index(task)]},
                method=adaptation,
                threshold=settings.threshold,
                steps=settings.tune_steps,
            )
        adapt_time += time.perf_counter() - t0
        result = evaluator.evaluate(evaluator.policy_for(model), tasks)
        success.update({r.task: r.success_rate for r in result.tasks})
        returns.update({r.task: r.mean_return for r in result.tasks})
    return {
        "success_mean": float(np.mean(list(success.values()))),
        "return_mean": float(np.mean(list(returns.values()))),
        "success": success,
        "return": returns,
        "target_returns": evaluator.target_returns(),
        "adapt_time_s": adapt_time,
    }


def evaluate_unseen(
    algo: Any,
    method: str,
    overrides: Mapping[str, Any],
    held: HeldOutData,
    make_evaluator: EvaluatorFactory,
) -> dict[str, Any]:
    """A cell's ``unseen`` record: per adaptation method its result, or in
    ``not_applicable`` why it cannot run; ``eval_time_s`` covers building
    the held-out environments (once per cell, like the seen ones) and every
    adaptation's episodes."""
    record: dict[str, Any] = {
        "dataset_id": held.held_out.spec.dataset_id,
        "tasks": held.tasks,
        "demos_per_task": held.held_out.demos,
        "data_success": held.data_success(),
        "adapt": {},
        "not_applicable": {},
    }
    if not isinstance(algo, HarmoDT):
        record["not_applicable"][NO_ADD_TASK] = (
            f"{METHOD_LABELS.get(method, method)} takes the task as a one-hot input "
            "over its training tasks: a new task has no input"
        )
        return record
    t = time.perf_counter()
    with make_evaluator(held.minari_dataset, held.demos) as evaluator:
        for name, problem in held.held_out.adaptations(method, overrides).items():
            if problem is not None:
                record["not_applicable"][name] = problem
            else:
                record["adapt"][name] = _adapt_and_evaluate(algo, name, held, evaluator)
    record["eval_time_s"] = (
        time.perf_counter()
        - t
        - sum(r["adapt_time_s"] for r in record["adapt"].values())
    )
    return record
