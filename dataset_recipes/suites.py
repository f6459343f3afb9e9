"""Meta-World v3 task suites (MT1 ... MT50, ML10/ML45 splits): one source of truth.

Why: the suite lists decide which tasks a dataset contains *and in which order*
(``task_id`` indexes into that order), so they must not be retyped anywhere.
They are read from the package data file ``suites.json`` (a copy of the
project's shared list: MT5/MT30/MT50 follow the HarmoDT release ordering, MT10
is Meta-World's own MT10). ``MT1`` is any single task, chosen with ``tasks``.
The meta-learning splits ``ML10-TRAIN``/``ML10-TEST`` and ``ML45-TRAIN``/
``ML45-TEST`` (train on one, adapt to the held-out other) are read from the
installed ``metaworld`` (``env_dict.ML10_V3``/``ML45_V3``), never retyped.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

from .errors import RecipeError

#: Meta-World's meta-learning benchmark splits (from the installed metaworld).
META_SUITES: tuple[str, ...] = ("ML10-TRAIN", "ML10-TEST", "ML45-TRAIN", "ML45-TEST")
#: Suites that are a fixed task list (``suites.json`` and metaworld's splits).
FIXED_SUITES: tuple[str, ...] = ("MT5", "MT10", "MT30", "MT50", *META_SUITES)
#: Every suite name accepted by the recipes (``MT1`` = one task given via ``tasks``).
SUITE_NAMES: tuple[str, ...] = ("MT1", *FIXED_SUITES)


@cache
def _load() -> dict[str, tuple[str, ...]]:
    text = resources.files(__package__).joinpath("suites.json").read_text("utf-8")
    raw = json.loads(text)
    suites = {name: tuple(raw[name]) for name in FIXED_SUITES if name in raw}
    from metaworld import env_dict  # lazily: importing metaworld takes a while

    for bench, splits in (("ML10", env_dict.ML10_V3), ("ML45", env_dict.ML45_V3)):
        for split in ("train", "test"):
            suites[f"{bench}-{split.upper()}"] = tuple(splits[split])
    return suites


def all_tasks() -> tuple[str, ...]:
    """All 50 Meta-World v3 task names, in the MT50 order."""
    return _load()["MT50"]


def list_suites() -> dict[str, tuple[str, ...]]:
    """Suite name -> ordered task list, for the fixed suites (MT5 ... MT50).

    ``MT1`` is not listed: it is any one task of :func:`all_tasks`.
    """
    return dict(_load())


def normalize_suite(name: str) -> str:
    """Canonical suite name (``"mt10"`` -> ``"MT10"``); RecipeError if unknown."""
    canonical = name.strip().upper()
    if canonical not in SUITE_NAMES:
        raise RecipeError(
            f"unknown suite {name!r}; valid suites: {', '.join(SUITE_NAMES)}"
        )
    return canonical


def suite_tasks(name: str) -> tuple[str, ...]:
    """Ordered tasks of a fixed suite (``MT5``, ``MT10``, ``MT30``, ``MT50``)."""
    canonical = normalize_suite(name)
    if canonical == "MT1":
        raise RecipeError(
            "suite MT1 is a single task: give it with tasks=..., e.g. --tasks reach-v3"
        )
    return _load()[canonical]


def check_task(task: str) -> str:
    """Return ``task`` if it is a Meta-World v3 task, else raise RecipeError."""
    known = all_tasks()
    if task in known:
        return task
    close = difflib.get_close_matches(task, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RecipeError(
        f"unknown task {task!r}{hint}; valid tasks: {', '.join(sorted(known))}"
    )


def parse_task_list(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Split ``"a,b,c"`` (or take a sequence), strip blanks, validate every name."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = tuple(t.strip() for t in items if t.strip())
    if not names:
        raise RecipeError("empty task list; give at least one task, e.g. reach-v3")
    for name in names:
        check_task(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RecipeError(f"task(s) listed twice: {', '.join(duplicates)}")
    return names


def resolve_tasks(
    suite: str | None = None, tasks: str | Sequence[str] | None = None
) -> tuple[str, ...]:
    """The ordered task list of a build.

    * ``suite`` alone: the suite's list (``MT1`` needs exactly one task in ``tasks``).
    * ``tasks`` alone: that subset, in the given order.
    * both: ``tasks`` must belong to the suite; the build covers ``tasks``.
    """
    if suite is None and tasks is None:
        raise RecipeError(
            f"give a suite ({', '.join(SUITE_NAMES)}) or a task list (e.g. reach-v3)"
        )
    chosen = parse_task_list(tasks) if tasks is not None else None
    if suite is None:
        assert chosen is not None
        return chosen
    canonical = normalize_suite(suite)
    if canonical == "MT1":
        if chosen is None or len(chosen) != 1:
            raise RecipeError(
                "suite MT1 needs exactly one task, e.g. --suite MT1 --tasks reach-v3"
            )
        return chosen
    members = _load()[canonical]
    if chosen is None:
        return members
    outside = [t for t in chosen if t not in members]
    if outside:
        raise RecipeError(
            f"task(s) {', '.join(outside)} not in suite {canonical}; "
            f"its tasks: {', '.join(members)}"
        )
    return chosen


def suite_of(tasks: Sequence[str]) -> str | None:
    """The fixed suite whose ordered task list equals ``tasks`` exactly, if any."""
    for name in FIXED_SUITES:
        if tuple(tasks) == _load()[name]:
            return name
    return None


def canonical_suite(tasks: Sequence[str]) -> str | None:
    """The suite a build of ``tasks`` names in its id and card: the fixed
    suite with exactly these tasks, ``MT1`` for one task, else ``None``."""
    return suite_of(tasks) or ("MT1" if len(tasks) == 1 else None)


def task_args(suite: str | None, tasks: Sequence[str]) -> list[str]:
    """The command-line arguments that select ``tasks``: ``--suite`` where a
    fixed suite names them, else ``--tasks``."""
    if suite is not None and suite != "MT1":
        return ["--suite", suite]
    return ["--tasks", ",".join(tasks)]
