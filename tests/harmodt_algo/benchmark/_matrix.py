"""The tiny benchmark matrix the harness tests share: MTDT preset and MTBC,
seed 0, 4 gradient steps, one evaluation episode per task, on a 2-task
recipe dataset of 2 expert episodes x 40 steps that the harness itself
builds (``task+task:quality``) inside a temporary Minari store. Every test
checks plumbing, not learning."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo.benchmark import (
    BenchmarkSettings,
    MatrixSummary,
    cell_path,
    parse_dataset,
    run_matrix,
)

ROOT = Path(__file__).resolve().parents[3]
TASKS = "reach-v3+button-press-topdown-v3"
DATASET = f"{TASKS}:expert"
OVERRIDES: dict[str, dict[str, Any]] = {
    "mtdt": {
        "embed_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "context_size": 5,
        "batch_size": 8,
        "max_timestep": 100,
    },
    "mtbc": {"hidden_units": [32], "batch_size": 16},
    "mtdt-d3rlpy": {
        "hidden_units": [16],
        "num_heads": 2,
        "num_layers": 1,
        "context_size": 5,
        "batch_size": 8,
        "max_timestep": 100,
    },
}
SETTINGS = BenchmarkSettings(steps=4, eval_episodes=1, overrides=OVERRIDES)
BUILD: dict[str, Any] = {"episodes_per_task": 2, "max_episode_steps": 40}
CELL_KEYS = {
    "schema",
    "dataset_id",
    "method",
    "seed",
    "budget",
    "steps",
    "param_count",
    "train_time_s",
    "eval_time_s",
    "success_mean",
    "return_mean",
    "success",
    "return",
    "evaluation",
    "dataset",
    "config",
    "versions",
    "resumed_from",
}


@dataclass
class Matrix:
    store: Path
    out: Path
    dataset_id: str
    summary: MatrixSummary
    log: list[str]

    def cell(self, method: str, seed: int = 0) -> Path:
        return cell_path(self.out, self.dataset_id, method, seed)


def run_tiny_matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Build the dataset and run the matrix in fresh temporary folders."""
    store = tmp_path_factory.mktemp("minari")
    out = tmp_path_factory.mktemp("results")
    log: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        summary = run_matrix(
            "mtdt,mtbc", [DATASET], [0], out, SETTINGS, log=log.append, **BUILD
        )
    return Matrix(store, out, parse_dataset(DATASET).dataset_id, summary, log)


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


#: HarmoDT-F rewiring every 2 steps: mask updates on both sides of a stop
RESUMABLE = {
    **OVERRIDES["mtdt"],
    "mask_interval": 2,
    "change_fraction": 0.5,
    "change_schedule": "constant",
}
#: what a resumed cell may differ in: wall-clock times, and the record of it
WALL_CLOCK = {"train_time_s", "eval_time_s", "elapsed_s", "time_s", "started_at"}
WALL_CLOCK |= {"finished_at", "resumed_from"}


def comparable(value: Any) -> Any:
    """A cell without its wall-clock fields (``time_*`` metrics included)."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if k not in WALL_CLOCK and not k.startswith("time_")
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value
