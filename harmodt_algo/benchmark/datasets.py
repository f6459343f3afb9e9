"""The datasets of a matrix: what ``--datasets`` names, how a missing recipe
dataset is built (or how to build it), and what a cell records about its data.
Minari and the recipes are imported only when a dataset is actually touched."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..data import MultiTaskDataset
from .errors import BenchmarkError

__all__ = [
    "DatasetSpec",
    "Log",
    "as_spec",
    "dataset_facts",
    "ensure_dataset",
    "parse_dataset",
]

Log = Callable[[str], None]


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
    def replay(self) -> bool:
        """A SAC learner's replay data: built by its own (hours-long) recipe
        run, never by the harness."""
        from dataset_recipes import REPLAY_DATASETS

        return self.quality in REPLAY_DATASETS

    @property
    def buildable(self) -> bool:
        return (
            self.quality is not None
            and not self.replay
            and (self.suite is not None or self.tasks is not None)
        )

    def recipe_args(self) -> str:
        """``harmodt-recipes metaworld`` arguments that build it."""
        if self.suite is not None:
            where = f"--suite {self.suite}"
        elif self.tasks is not None and len(self.tasks) == 1:
            where = f"--suite MT1 --tasks {self.tasks[0]}"
        else:
            where = f"--tasks {','.join(self.tasks or ('<tasks>',))}"
        if self.replay:
            return f"{where} --quality replay --env-steps-per-task N"
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


def as_spec(dataset: DatasetSpec | str) -> DatasetSpec:
    """``dataset`` as a spec: the API takes specs and names alike."""
    return dataset if isinstance(dataset, DatasetSpec) else parse_dataset(dataset)


def _mujoco_benchmark(dataset_id: str) -> str | None:
    """The benchmark of a MuJoCo recipe id
    (``harmodt-mujoco/cheetah-vel-train/expert-v0`` -> ``cheetah-vel``)."""
    from dataset_recipes.mujoco_build import MUJOCO_NAMESPACE

    parts = dataset_id.split("/")
    if len(parts) != 3 or parts[0] != MUJOCO_NAMESPACE:
        return None
    return parts[1].rsplit("-", 1)[0]


def _missing_message(spec: DatasetSpec) -> str:
    from dataset_recipes import datasets_root

    head = f"no local dataset {spec.dataset_id!r} under {datasets_root()}"
    mujoco = _mujoco_benchmark(spec.dataset_id)
    if mujoco is not None:
        return (
            f"{head}; a MuJoCo benchmark's data takes CPU-hours and the harness "
            f"does not build it: run 'harmodt-recipes mujoco --benchmark {mujoco}' "
            "(resumable) first"
        )
    if spec.replay:
        return (
            f"{head}; a learner's replay data takes CPU-hours and the harness does "
            f"not build it: run 'harmodt-recipes metaworld {spec.recipe_args()}' "
            "(resumable) first"
        )
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
    return _build_dataset(spec, episodes_per_task, recipe_seed, max_episode_steps, log)


def _build_dataset(
    spec: DatasetSpec,
    episodes_per_task: int,
    recipe_seed: int,
    max_episode_steps: int | None,
    log: Log | None,
) -> Any:
    """Build the missing ``spec`` with the recipes, then load it."""
    import minari

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


def dataset_facts(minari_dataset: Any, data: MultiTaskDataset) -> dict[str, Any]:
    """What a cell records about its data (from the recipe metadata)."""
    from dataset_recipes import schema

    metadata = dict(minari_dataset.storage.metadata)
    recipe = metadata.get("recipe") or {}
    recipe = dict(recipe) if isinstance(recipe, Mapping) else {}
    env = metadata.get(schema.METADATA_ENV) or {}
    counts = {data.num_episodes(t) for t in data.task_names}
    return {
        "suite": recipe.get("suite"),
        "quality": recipe.get("quality") or recipe.get("kind"),
        "recipe_seed": recipe.get("seed"),
        "episodes_per_task": recipe.get("episodes_per_task")
        or (counts.pop() if len(counts) == 1 else None),
        # what the table reports: MuJoCo tasks have no success signal
        "measure": "return" if env.get("family") == "mujoco" else "success",
        "max_episode_steps": recipe.get("max_episode_steps"),
        "tasks": list(data.task_names),
        "episodes": int(sum(data.num_episodes(t) for t in data.task_names)),
        "transitions": int(sum(data.num_transitions(t) for t in data.task_names)),
    }
