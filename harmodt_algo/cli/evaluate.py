"""``harmodt evaluate``: a saved model on its tasks' held-out goals, plus the
progress-bar evaluation that ``train`` uses at every epoch end too.

The environments come from the recipe dataset (``--dataset``, else the id in
``run.json``), so a model is always evaluated on the goals it was meant for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dataset_recipes.commandline import EXIT_OK, say

from ..options import OptionError, parse_list
from .common import (
    PROG,
    RUN_FILE,
    CliError,
    check_positive,
    load_minari,
    load_model,
    read_run_file,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation import EvaluationResult, MultiTaskEvaluator
    from ..harmodt import HarmoDT

__all__ = ["cmd_evaluate", "episode_limit", "run_evaluation"]


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


def episode_limit(minari_dataset: Any) -> int | None:
    """The recipe's ``max_episode_steps``: the progress bar's length per episode."""
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


def _dataset_suite(dataset_id: str, minari_dataset: Any) -> list[str]:
    """The tasks the dataset can build environments for (its recipe's list)."""
    from dataset_recipes import schema

    suite = [
        str(t) for t in minari_dataset.storage.metadata.get(schema.METADATA_TASKS, [])
    ]
    if not suite:
        raise CliError(
            f"dataset {dataset_id!r} is not a harmodt-recipes dataset (no task list "
            "in its metadata): it cannot rebuild evaluation environments"
        )
    return suite


def _selected_tasks(args: argparse.Namespace, model_tasks: list[str]) -> list[str]:
    """``--tasks`` (checked against the model's), else all the model's tasks."""
    if not args.tasks:
        return model_tasks
    try:
        chosen = parse_list("--tasks", args.tasks)
    except OptionError as exc:
        raise CliError(str(exc)) from None
    unknown = [t for t in chosen if t not in model_tasks]
    if unknown:
        raise CliError(
            f"--tasks: the model has no task(s) {unknown}; its tasks: "
            f"{', '.join(model_tasks)}"
        )
    return chosen


def _available_tasks(
    args: argparse.Namespace, tasks: list[str], suite: list[str], dataset_id: str
) -> list[str]:
    """The ``tasks`` the dataset has environments for; a task it lacks is
    skipped with a note, unless it was asked for by name."""
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
    return tasks


def cmd_evaluate(args: argparse.Namespace, out: Console) -> int:
    """``harmodt evaluate``: a table (or ``--json``) of every chosen task."""
    check_positive("--episodes", args.episodes)
    check_positive("--workers", args.workers, allow_zero=True)
    check_positive("--max-steps", args.max_steps)
    model_path = Path(args.model)
    algo = load_model(model_path, args.device, trust_pickle=args.trust_pickle)
    groups = _dataset_groups(args, algo, model_path)
    results, targets = [], {}
    for dataset_id, model_tasks in groups.items():
        result, found = _evaluate_group(args, algo, dataset_id, model_tasks)
        results.append(result)
        targets.update(found)
    from ..evaluation import merge_results

    result = merge_results(results)
    dataset_id = ", ".join(groups)
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
    _print_result(out, model_path, algo, result, dataset_id)
    return EXIT_OK


def _dataset_groups(
    args: argparse.Namespace, algo: HarmoDT, model_path: Path
) -> dict[str, list[str]]:
    """Dataset id -> the model's tasks to evaluate with its environments:
    ``--dataset`` for every task; else each task's recorded dataset (the
    model's ``task_datasets``), then the run's dataset (``run.json``)."""
    wanted = _selected_tasks(args, list(algo.task_names))
    if args.dataset:
        return {str(args.dataset): wanted}
    fallback = read_run_file(model_path).get("dataset_id")
    groups: dict[str, list[str]] = {}
    unknown = []
    for task in wanted:
        ident = algo.config.task_datasets.get(task) or fallback
        if ident:
            groups.setdefault(str(ident), []).append(task)
        else:
            unknown.append(task)
    if unknown:
        raise CliError(
            f"no --dataset given, and {str(model_path)!r} does not say which dataset "
            f"task(s) {unknown} came from (no record in the model, no {RUN_FILE} "
            "beside it); pass --dataset <recipe dataset id with the model's tasks>"
        )
    return groups


def _evaluate_group(
    args: argparse.Namespace, algo: HarmoDT, dataset_id: str, model_tasks: list[str]
) -> tuple[EvaluationResult, dict[str, float]]:
    """Evaluate ``model_tasks`` in the environments of ``dataset_id``."""
    from ..evaluation import MultiTaskEvaluator

    minari_dataset = load_minari(dataset_id)
    suite = _dataset_suite(dataset_id, minari_dataset)
    tasks = _available_tasks(args, model_tasks, suite, dataset_id)
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
            horizon=episode_limit(minari_dataset),
            description=f"evaluating {len(tasks)} tasks",
        )
    return result, targets


def _print_result(
    out: Console,
    model_path: Path,
    algo: HarmoDT,
    result: EvaluationResult,
    dataset_id: str,
) -> None:
    """The per-task table and the mean line under it."""
    shown = Path(model_path.parent.name) / model_path.name
    title = (
        f"{shown} (step {algo.grad_step}): {len(result.tasks)} tasks × "
        f"{result.n_episodes} episodes, seed {result.seed}"
    )
    out.print(result.table(title=title))
    say(
        out,
        f"mean over tasks: success {100 * result.success_mean:.1f}%, return "
        f"{result.return_mean:.1f}  ({result.env_steps} env steps in "
        f"{result.elapsed_s:.1f} s; dataset {dataset_id})",
    )
