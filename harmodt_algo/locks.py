"""The lock of a run directory; the lock itself is the recipes' (one writer
at a time, shared by recipe builds, runs and benchmark cells)."""

from __future__ import annotations

from pathlib import Path

from dataset_recipes.locks import Busy, exclusive

__all__ = ["Busy", "exclusive", "folder_lock"]


def folder_lock(folder: str | Path) -> Path:
    """The lock file of a run directory."""
    return Path(folder) / ".lock"
