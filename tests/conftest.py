"""Shared pytest fixtures.

``make test`` runs the suite in two xdist workers (one per core of the
project's 2-core machines). Two torch threads per process on a shared 2-core
machine run up to 10x slower, so each worker, and every subprocess a test
starts, uses one thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # before anything imports torch
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


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


#: The tiny real Meta-World recipe dataset the algorithm tests train on.
TINY_TASKS = ("reach-v3", "button-press-topdown-v3")
TINY_STEPS = 60


@pytest.fixture(scope="session")
def _tiny_recipe_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Build once per session: 2 Meta-World tasks x 4 expert episodes x 60 steps."""
    from dataset_recipes import build_metaworld_dataset

    root = tmp_path_factory.mktemp("recipe-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        result = build_metaworld_dataset(
            tasks=list(TINY_TASKS),
            quality="expert",
            episodes_per_task=4,
            max_episode_steps=TINY_STEPS,
            chunk_episodes=2,
            progress=False,
        )
    return root, result.dataset_id


@pytest.fixture
def tiny_recipe_dataset(
    _tiny_recipe_store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The tiny recipe dataset, opened with ``minari.load_dataset``."""
    import minari

    root, dataset_id = _tiny_recipe_store
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return minari.load_dataset(dataset_id)
