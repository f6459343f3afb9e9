"""One writer at a time: a file lock, for a recipe build, a training run's
directory and a benchmark cell.

Why: two ``harmodt train --resume`` of one run, or a resume while the run
still trains, both wrote the same CSVs and checkpoints; two builds of one
dataset would stage the same chunks. It lives here, in the lower layer, so
that the recipes and the algorithm share it. The lock is
``filelock``'s (an OS lock: a holder that dies releases it, so a stale lock is
taken over without asking); the holder's pid is written beside it so the
second writer can say who holds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["Busy", "exclusive"]


class Busy(RuntimeError):
    """Another process holds the lock; the message names it."""


def _pid_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".pid")


def _holder(lock: Path) -> str:
    try:
        pid = _pid_file(lock).read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block, or raise :class:`Busy` at
    once (``what`` names the locked thing, e.g. "run 'runs/x'")."""
    lock_file = Path(path)
    lock = FileLock(lock_file, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise Busy(
            f"{what} is in use by {_holder(lock_file)}; wait for it to end (or stop "
            "it) and run this again"
        ) from None
    try:
        _pid_file(lock_file).write_text(f"{os.getpid()}\n", encoding="utf-8")
        yield
    finally:
        _pid_file(lock_file).unlink(missing_ok=True)
        lock.release()
