"""Reading multi-task Minari datasets: episodes and their task labels.

Why its own module: the data bridge (:mod:`harmodt_algo.data`) holds and
samples multi-task data; this reads it from Minari: converting each episode
(``observations[:-1]``, d3rlpy's ``get_minari`` pairs them wrongly), finding
each episode's task from ``infos["task_id"]`` / ``infos["task_name"]`` and the
metadata's task list, and checking that the labels agree. Bad data raises
:class:`DatasetError` naming the task, the episode and what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from d3rlpy.dataset import Episode
from minari import MinariDataset
from minari.dataset.episode_data import EpisodeData

from dataset_recipes.schema import INFO_TASK_ID, INFO_TASK_NAME, METADATA_TASKS

__all__ = [
    "DatasetError",
    "check_unique",
    "order_tasks",
    "parse_minari",
    "per_task_sources",
    "single_task_group",
]


class DatasetError(ValueError):
    """The data cannot be used for multi-task training; the message says why."""


# --------------------------------------------------------------------------- #
# Minari parsing helpers
# --------------------------------------------------------------------------- #


def _decode(value: Any) -> str:
    if isinstance(value, bytes):  # np.bytes_ is a bytes subclass
        return value.decode("utf-8")
    return str(value)


def _metadata_task_list(dataset: MinariDataset) -> list[str] | None:
    listed = dataset.storage.metadata.get(METADATA_TASKS)
    if listed is None:
        return None
    if isinstance(listed, (str, bytes)):
        return [_decode(listed)]
    return [_decode(x) for x in np.asarray(listed).reshape(-1).tolist()]


def _episode_label(episode: EpisodeData, where: str) -> tuple[int | None, str | None]:
    """(task_id, task_name) of a Minari episode; either may be None if absent."""
    infos = episode.infos or {}
    task_id: int | None = None
    task_name: str | None = None
    if INFO_TASK_ID in infos:
        ids = np.asarray(infos[INFO_TASK_ID]).reshape(-1)  # (T+1,)
        if ids.size:
            if not np.all(ids == ids[0]):
                raise DatasetError(
                    f"{where} changes its task label mid-episode: "
                    f"infos['{INFO_TASK_ID}'] takes the values "
                    f"{sorted(set(ids.tolist()))}. Every step of an episode must "
                    "belong to one task; split such episodes when recording."
                )
            task_id = int(ids[0])
    if INFO_TASK_NAME in infos:
        raw = np.asarray(infos[INFO_TASK_NAME]).reshape(-1)  # (T+1,)
        if raw.size:
            names = sorted({_decode(x) for x in np.unique(raw).tolist()})
            if len(names) > 1:
                raise DatasetError(
                    f"{where} changes its task label mid-episode: "
                    f"infos['{INFO_TASK_NAME}'] takes the values {names}. Every "
                    "step of an episode must belong to one task; split such "
                    "episodes when recording."
                )
            task_name = names[0]
    return task_id, task_name


def _convert_minari_episode(episode: EpisodeData, where: str) -> Episode:
    """Minari episode (T+1 observations) -> d3rlpy Episode (T observations).

    The arrays stay in their stored dtype here; ``MultiTaskDataset`` copies them
    into its float32 storage (one copy, no float32 temporaries)."""
    obs = episode.observations
    if isinstance(obs, (dict, tuple, list)):
        raise DatasetError(
            f"{where} has {type(obs).__name__} observations; only flat Box "
            "observations are supported. Flatten them when recording (e.g. "
            "gymnasium.wrappers.FlattenObservation)."
        )
    observations = np.asarray(obs)  # (T+1, obs)
    actions = np.asarray(episode.actions)  # (T, A)
    rewards = np.asarray(episode.rewards).reshape(-1, 1)  # (T, 1)
    steps = rewards.shape[0]
    if steps == 0:
        raise DatasetError(f"{where} has no steps; drop empty episodes.")
    if actions.shape[0] != steps:
        raise DatasetError(
            f"{where} has {actions.shape[0]} actions but {steps} rewards; "
            "the episode is corrupt."
        )
    if observations.shape[0] != steps + 1:
        raise DatasetError(
            f"{where} has {observations.shape[0]} observations for {steps} "
            f"actions; a Minari episode must store T+1 = {steps + 1} "
            "observations (the last one follows the final action)."
        )
    terminations = np.asarray(episode.terminations).reshape(-1)
    return Episode(
        observations=observations[:-1],  # drop the T+1-th: it has no action
        actions=actions,
        rewards=rewards,
        terminated=bool(terminations[-1]) if terminations.size else False,
    )


def _check_spaces(dataset: MinariDataset) -> None:
    obs_space = dataset.observation_space
    act_space = dataset.action_space
    if not isinstance(obs_space, gymnasium.spaces.Box) or len(obs_space.shape) != 1:
        raise DatasetError(
            f"Minari dataset '{dataset.id}' has observation space {obs_space}; "
            "only flat (1-D) Box observation spaces are supported (Dict/Tuple "
            "spaces are not). Flatten observations when recording, e.g. with "
            "gymnasium.wrappers.FlattenObservation."
        )
    if not isinstance(act_space, gymnasium.spaces.Box) or len(act_space.shape) != 1:
        raise DatasetError(
            f"Minari dataset '{dataset.id}' has action space {act_space}; HarmoDT "
            "needs a continuous, flat (1-D) Box action space."
        )


@dataclasses.dataclass
class _ParsedMinari:
    listed: list[str] | None  # metadata task list, if any
    labeled: bool  # whether episodes carry task labels
    groups: dict[str, list[Episode]]  # task name -> episodes, first-seen order
    origins: dict[str, list[str]]  # task name -> "episode id N of dataset X"


def parse_minari(dataset: MinariDataset) -> _ParsedMinari:
    """Read and group the episodes of one Minari dataset by task label."""
    listed = _checked_task_list(dataset)
    groups: dict[str, list[Episode]] = {}
    origins: dict[str, list[str]] = {}
    name_to_id: dict[str, int] = {}
    id_only = True
    n_labeled = 0
    n_unlabeled = 0
    for episode in dataset.iterate_episodes():
        where = f"episode id {episode.id} of Minari dataset '{dataset.id}'"
        task_id, task_name = _episode_label(episode, where)
        name: str | None
        if task_id is None and task_name is None:
            n_unlabeled += 1
            name = _unlabeled_task(listed, where)
        else:
            n_labeled += 1
            if listed is not None:
                name = _listed_task(task_id, task_name, listed, where)
            else:
                id_only = id_only and task_name is None
                name = _unlisted_task(task_id, task_name, name_to_id, where)
        if n_labeled and n_unlabeled and listed is None:
            raise DatasetError(
                f"Minari dataset '{dataset.id}' mixes episodes with and without "
                f"task labels (first inconsistency at {where}). Label every step "
                f"with infos['{INFO_TASK_ID}'] / infos['{INFO_TASK_NAME}']."
            )
        key = dataset.id if name is None else name
        groups.setdefault(key, []).append(_convert_minari_episode(episode, where))
        origins.setdefault(key, []).append(where)
    if n_labeled and listed is None and id_only:
        # ids without names: order tasks by id, so task index == id when dense
        order = sorted(groups, key=lambda n: name_to_id[n])
        groups = {n: groups[n] for n in order}
        origins = {n: origins[n] for n in order}
    return _ParsedMinari(
        listed=listed, labeled=n_labeled > 0, groups=groups, origins=origins
    )


def _checked_task_list(dataset: MinariDataset) -> list[str] | None:
    """The metadata task list of a usable dataset (flat Box spaces, at least
    one episode, no duplicate task names), or None if it lists none."""
    _check_spaces(dataset)
    if dataset.total_episodes == 0:
        raise DatasetError(
            f"Minari dataset '{dataset.id}' has no episodes; nothing to train on."
        )
    listed = _metadata_task_list(dataset)
    if listed is not None and len(set(listed)) != len(listed):
        raise DatasetError(
            f"Minari dataset '{dataset.id}' lists duplicate tasks in its metadata "
            f"'{METADATA_TASKS}': {listed}. Task names must be unique."
        )
    return listed


def _unlabeled_task(listed: list[str] | None, where: str) -> str | None:
    """Task of an episode without labels: the only listed task, or None (the
    dataset id names it) if nothing is listed; ambiguous otherwise."""
    if listed is not None and len(listed) == 1:
        return listed[0]
    if listed is not None:
        raise DatasetError(
            f"{where} has no task label (infos['{INFO_TASK_ID}'] / "
            f"infos['{INFO_TASK_NAME}']) but the metadata lists "
            f"{len(listed)} tasks, so its task is unknown. Label every "
            "step with its task when recording."
        )
    return None


def _listed_task(
    task_id: int | None, task_name: str | None, listed: list[str], where: str
) -> str:
    """Task of a labeled episode when the metadata lists the tasks: the id
    indexes that list, and a name must agree with it."""
    if task_id is not None:
        if not 0 <= task_id < len(listed):
            raise DatasetError(
                f"{where} has infos['{INFO_TASK_ID}'] = {task_id}, out "
                f"of range for the {len(listed)} tasks of metadata "
                f"'{METADATA_TASKS}' {listed}."
            )
        name = listed[task_id]
        if task_name is not None and task_name != name:
            raise DatasetError(
                f"{where} has inconsistent task labels: "
                f"infos['{INFO_TASK_ID}'] = {task_id} means task "
                f"'{name}' in the metadata list, but "
                f"infos['{INFO_TASK_NAME}'] says '{task_name}'."
            )
        return name
    assert task_name is not None
    if task_name not in listed:
        raise DatasetError(
            f"{where} is labeled with task '{task_name}', which "
            f"is not in the metadata task list {listed}."
        )
    return task_name


def _unlisted_task(
    task_id: int | None,
    task_name: str | None,
    name_to_id: dict[str, int],
    where: str,
) -> str:
    """Task of a labeled episode when no task list exists: its name, else
    ``task-<id>``. Records each name's id in ``name_to_id`` (for consistency
    checks and the id order) and rejects a name seen with another id."""
    if task_name is not None:
        name = task_name
        if task_id is not None:
            known = name_to_id.setdefault(name, task_id)
            if known != task_id:
                raise DatasetError(
                    f"{where} labels task '{name}' with "
                    f"infos['{INFO_TASK_ID}'] = {task_id}, but earlier "
                    f"episodes used {known}; task ids must be consistent."
                )
        return name
    assert task_id is not None
    name = f"task-{task_id}"
    name_to_id[name] = task_id
    return name


def check_unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    dups: set[str] = set()
    for name in names:
        (dups if name in seen else seen).add(name)
    if dups:
        raise DatasetError(f"{what} contains duplicate task names {sorted(dups)}.")


def order_tasks(
    found: Sequence[str], task_names: Sequence[str] | None, where: str
) -> list[str]:
    """Apply a user-given task order: a permutation of the tasks found."""
    if task_names is None:
        return list(found)
    wanted = [str(n) for n in task_names]
    check_unique(wanted, "task_names")
    missing = [n for n in found if n not in wanted]
    if missing:
        raise DatasetError(
            f"{where} contains tasks {missing} that are not in the given "
            f"task_names {wanted}. Add them to task_names (it fixes the task "
            "order, it does not filter tasks)."
        )
    empty = [n for n in wanted if n not in found]
    if empty:
        raise DatasetError(
            f"task_names lists tasks {empty} that have no episodes in {where}. "
            "Remove them from task_names or add data for them."
        )
    return wanted


def per_task_sources(
    source: Sequence[MinariDataset] | Mapping[str, MinariDataset],
) -> list[tuple[str | None, MinariDataset]]:
    """(task name or None, dataset) per given per-task dataset: a mapping
    names its tasks, a sequence leaves naming to the data."""
    items: list[tuple[str | None, MinariDataset]]
    if isinstance(source, Mapping):
        items = [(str(k), v) for k, v in source.items()]
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        items = [(None, v) for v in source]
    else:
        raise TypeError(
            f"from_minari expects a MinariDataset, a sequence of them or a "
            f"mapping name -> MinariDataset, got {type(source).__name__}."
        )
    if not items:
        raise DatasetError(
            "no tasks: the sequence/mapping of Minari datasets is empty."
        )
    return items


def single_task_group(
    key: str | None, dataset: MinariDataset
) -> tuple[str, list[Episode], list[str]]:
    """(task name, episodes, their origins) of a dataset given as one task;
    named ``key`` if given, else after its own (single) task label."""
    if not isinstance(dataset, MinariDataset):
        raise TypeError(
            f"expected a MinariDataset for task {key!r}, got {type(dataset).__name__}."
        )
    parsed = parse_minari(dataset)
    if len(parsed.groups) > 1:
        raise DatasetError(
            f"Minari dataset '{dataset.id}' was given as ONE task but its "
            f"episodes belong to {len(parsed.groups)} tasks "
            f"{list(parsed.groups)}. Pass it on its own (as a multi-task "
            "dataset) instead of in a list/mapping of per-task datasets."
        )
    ((label, eps),) = parsed.groups.items()
    name = key if key is not None else label
    return name, eps, parsed.origins[label]
