"""One place that turns free-text task names into metric keys and file names.

Task names come from the data (Minari ``info["task"]``, a dataset id for an
unlabeled dataset, a dict key): they may hold ``/``, spaces or any unicode.
d3rlpy's file logger writes one ``<logdir>/<metric>.csv`` per metric, so a
metric key must be a safe file name; every key derived from a task name goes
through :func:`safe_name`.
"""

from __future__ import annotations

import re

__all__ = ["metric_key", "safe_name"]

_UNSAFE = re.compile(r"[^\w.+-]+")  # \w is unicode-aware: letters stay


def safe_name(text: str) -> str:
    """``text`` as one file-name component: every run of characters other
    than letters, digits, ``_ . + -`` becomes ``_``; leading dots are
    replaced (no hidden files, no ``..``); never empty."""
    safe = _UNSAFE.sub("_", text.strip())
    safe = re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe)
    return safe or "_"


def metric_key(prefix: str, task: str) -> str:
    """The per-task metric ``<prefix>_<task>`` as a safe name (``loss``,
    ``success``, ``return``, ``environment``)."""
    return f"{prefix}_{safe_name(task)}"
