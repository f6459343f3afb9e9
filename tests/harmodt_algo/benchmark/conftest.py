"""Fixtures of the harness tests: one tiny matrix per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._matrix import Matrix, run_tiny_matrix


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return run_tiny_matrix(tmp_path_factory)


@pytest.fixture
def store(matrix: Matrix, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The matrix's Minari store, as ``MINARI_DATASETS_PATH``."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(matrix.store))
    return matrix.store
