"""Recipe dataset ids: :func:`dataset_id` builds one, :func:`parse_dataset_id`
takes one apart. Minari keeps its id generator and parser side by side; so do
we, in a module of their own that every other part (and ``harmodt_algo``)
reads ids through.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import schema
from .errors import RecipeError
from .qualities import DATASET_KINDS, check_dataset_kind
from .suites import FIXED_SUITES, all_tasks, parse_task_list, suite_of

__all__ = [
    "DATASET_VERSION",
    "RecipeId",
    "check_dataset_id",
    "dataset_id",
    "parse_dataset_id",
]

#: The ``-vN`` suffix of recipe dataset ids.
DATASET_VERSION = 0


def dataset_id(
    suite_or_tasks: str | Sequence[str], quality: str, *, version: int = DATASET_VERSION
) -> str:
    """The dataset id of a recipe, under ``schema.NAMESPACE``.

    * a fixed suite (``"MT10"``, or exactly its ordered task list):
      ``metaworld-v3/mt10/<quality>-v0``;
    * one task (``"reach-v3"`` or ``["reach-v3"]``, i.e. MT1):
      ``metaworld-v3/reach-v3/<quality>-v0``;
    * any other ordered task list: ``metaworld-v3/custom-<8 hex>/<quality>-v0``,
      the digest being the first 8 hex digits of sha256 of the comma-joined list.

    ``quality`` is a quality level or a replay dataset name
    (``near-optimal-replay``, ``sub-optimal-replay``).
    """
    check_dataset_kind(quality)
    if isinstance(suite_or_tasks, str):
        name = suite_or_tasks.strip()
        if name.upper() in FIXED_SUITES:
            group = name.lower()
        elif name.upper() == "MT1":
            raise RecipeError("MT1 needs its task: use dataset_id('reach-v3', ...)")
        else:
            tasks = parse_task_list(name)
            group = _group_of(tasks)
    else:
        group = _group_of(parse_task_list(suite_or_tasks))
    return f"{schema.NAMESPACE}/{group}/{quality}-v{version}"


@dataclass(frozen=True)
class RecipeId:
    """A recipe dataset id taken apart (:func:`parse_dataset_id`).

    ``group`` is the id's middle part; ``suite`` the fixed suite it names (or
    None), ``task`` the single task of an MT1 id (or None); a ``custom-<hex>``
    group has neither (its task list is only in the dataset's metadata).
    """

    group: str
    quality: str
    version: int
    suite: str | None = None
    task: str | None = None


_RECIPE_ID = re.compile(rf"{re.escape(schema.NAMESPACE)}/([^/]+)/(.+)-v(\d+)")


def parse_dataset_id(value: str) -> RecipeId | None:
    """The inverse of :func:`dataset_id` (Minari keeps its id generator and
    parser together, so do we): None for an id that is not a recipe's
    (another namespace, an unknown quality)."""
    match = _RECIPE_ID.fullmatch(value.strip())
    if match is None or match.group(2) not in DATASET_KINDS:
        return None
    group, quality, version = match.group(1), match.group(2), int(match.group(3))
    suite = group.upper() if group.upper() in FIXED_SUITES else None
    task = group if suite is None and group in all_tasks() else None
    return RecipeId(group, quality, version, suite, task)


def _group_of(tasks: Sequence[str]) -> str:
    suite = suite_of(tasks)
    if suite is not None:
        return suite.lower()
    if len(tasks) == 1:
        return tasks[0]
    digest = hashlib.sha256(",".join(tasks).encode()).hexdigest()[:8]
    return f"custom-{digest}"


def check_dataset_id(value: str) -> str:
    from minari.dataset.minari_dataset import parse_dataset_id

    if re.fullmatch(r"[-_\w]+(/[-_\w]+)*/[-_\w]+-v\d+", value) is not None:
        with contextlib.suppress(ValueError, TypeError):
            parse_dataset_id(value)
            return value
    raise RecipeError(
        f"malformed dataset id {value!r}; use namespace/name-vN (letters, digits, "
        f"'-', '_'; namespace of 2+ characters), e.g. {schema.NAMESPACE}/mine/expert-v0"
    )
