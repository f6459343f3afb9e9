"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def minari_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty Minari store: ``MINARI_DATASETS_PATH`` points at a tmp dir.

    Minari reads the variable on every call, so datasets created or loaded in
    the test live there and vanish afterwards.
    """
    path = tmp_path / "minari"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path
