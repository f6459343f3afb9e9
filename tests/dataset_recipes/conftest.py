"""Shared fixtures: tiny real builds in temporary Minari roots.

Every build here uses short episodes (``max_episode_steps``) so the whole
folder runs in well under two minutes on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataset_recipes import BuildResult, build_metaworld_dataset

SHORT = 25
TASKS = ("reach-v3", "push-v3")
QUALITY = "sub-optimal"
EPISODES = 2


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MINARI_DATASETS_PATH for one test."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@dataclass(frozen=True)
class Shared:
    root: Path
    multi: BuildResult  # TASKS x EPISODES, sub-optimal, 2 workers
    single: BuildResult  # reach-v3 x EPISODES, expert, 1 worker


@pytest.fixture(scope="session")
def _shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    root = tmp_path_factory.mktemp("shared-minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        multi = build_metaworld_dataset(
            tasks=TASKS,
            quality=QUALITY,
            episodes_per_task=EPISODES,
            max_episode_steps=SHORT,
            workers=2,
            progress=False,
        )
        single = build_metaworld_dataset(
            tasks="reach-v3",
            quality="expert",
            episodes_per_task=EPISODES,
            max_episode_steps=SHORT,
            workers=1,
            progress=False,
        )
    yield Shared(root, multi, single)


@pytest.fixture
def shared(_shared: Shared, monkeypatch: pytest.MonkeyPatch) -> Shared:
    """The session's two prebuilt datasets; MINARI_DATASETS_PATH points at them."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(_shared.root))
    return _shared
