"""A HarmoDT cell's checkpoints, so that a stopped cell resumes mid-training.

Without them a cell killed after 9 of its 10 minutes starts again from step 0.
The hidden folder ``<out>/<dataset-slug>/<method>/.seed<k>.checkpoints/`` next
to the cell's JSON holds

* ``settings.json``: the budget the checkpoints belong to (checkpoints of
  another budget are refused, never silently resumed) and when the cell first
  started;
* ``step-<n>.pt`` and its ``step-<n>.json``
  (:class:`~harmodt_algo.checkpoints.CheckpointDir`: atomic, the newest 2
  kept, an unreadable newest falls back to the older): the model, and what the
  record needs besides it: the current epoch's per-step metrics (the record's
  ``final_metrics`` are last-epoch means), the training time so far and the
  steps the cell was resumed from;
* ``curve.json``: the learning-curve points evaluated so far (a point depends
  only on the model at its step, so any stored one is valid).

The matrix removes the folder once the cell's JSON is written. Baseline cells
(d3rlpy's own algorithms) are short: they restart from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..checkpoints import CheckpointDir
from ..files import write_json_atomic
from .errors import BenchmarkError

__all__ = ["CellCheckpoints", "EpochMetrics", "Resumed"]

SETTINGS_FILE = "settings.json"
CURVE_FILE = "curve.json"


@dataclasses.dataclass
class EpochMetrics:
    """The current epoch's per-step metrics, as d3rlpy's logger buffers them:
    kept with a checkpoint, a resumed fit's epoch means include the steps
    taken before the stop."""

    epoch: int = 0
    values: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def add(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """One step's metrics (a new ``epoch`` starts a new buffer)."""
        if epoch != self.epoch:
            self.epoch, self.values = epoch, {}
        for name, value in metrics.items():
            self.values.setdefault(name, []).append(float(value))

    def means(self) -> dict[str, float]:
        """d3rlpy's epoch means (``sum(buffer) / len(buffer)``, in order)."""
        return {name: sum(v) / len(v) for name, v in self.values.items() if v}


@dataclasses.dataclass
class Resumed:
    """What a resumed cell starts from (the model is loaded into the algo)."""

    path: Path
    step: int
    metrics: EpochMetrics
    train_time_s: float
    resumed_from: list[int]  # this resume included
    curve: list[dict[str, Any]]
    fit: dict[str, Any] | None  # the captured last epoch, once fit finished


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object; ValueError when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


class CellCheckpoints:
    """The checkpoint folder of one HarmoDT cell (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        budget: Mapping[str, Any],
        every: int,
        say: Callable[[str], None] | None = None,
    ):
        self.root = Path(root)
        self.budget = json.loads(json.dumps(dict(budget), default=str))
        self.every = every
        self.say = say or (lambda text: None)
        self._dir = CheckpointDir(self.root, keep=2)

    def saved_budget(self) -> Any:
        """The budget the checkpoints were made with, None when there are
        none; ValueError when ``settings.json`` cannot be read."""
        if not self._dir.paths():
            return None
        settings = _read_json(self.root / SETTINGS_FILE)
        if "budget" not in settings:
            raise ValueError(f"{self.root / SETTINGS_FILE}: no budget")
        return settings["budget"]

    def mismatch(self, saved: Any) -> str:
        """Why checkpoints of budget ``saved`` are not resumed (one line)."""
        return f"{self.root} (has {saved}, asked {self.budget})"

    def begin(self, started_at: str) -> str:
        """Before the cell trains: refuse checkpoints of another budget,
        forget ones whose budget cannot be read, start a fresh folder when
        there is nothing to resume; returns when the cell first started."""
        try:
            saved = self.saved_budget()
        except ValueError as exc:
            self.say(f"restarting from step 0: {exc}")
            saved = None
        if saved is not None and saved != self.budget:
            raise BenchmarkError(
                "this cell's checkpoints were made with a different budget: "
                f"{self.mismatch(saved)}. Use another --out, or --overwrite to "
                "recompute it"
            )
        if saved is None:
            self.remove()
            write_json_atomic(
                self.root / SETTINGS_FILE,
                {"budget": self.budget, "started_at": started_at},
            )
            return started_at
        settings = _read_json(self.root / SETTINGS_FILE)
        return str(settings.get("started_at") or started_at)

    def resume(self, algo: Any) -> Resumed | None:
        """Load the newest readable checkpoint into the built ``algo``, with
        its state and the curve up to its step; None when there is none."""
        if not self._dir.paths():
            return None
        try:
            path, state = self._dir.load_latest_with_state(algo)
        except FileNotFoundError as exc:
            raise BenchmarkError(
                f"{exc}; delete the folder to restart the cell"
            ) from None
        step = int(algo.grad_step)
        try:
            points = _read_json(self.root / CURVE_FILE).get("curve") or []
        except ValueError:
            points = []
        by_step = {int(p["step"]): p for p in points if int(p["step"]) <= step}
        self.say(f"resuming from step {step} ({path})")
        return Resumed(
            path=path,
            step=step,
            metrics=EpochMetrics(
                int(state.get("epoch", 0)), dict(state.get("epoch_metrics") or {})
            ),
            train_time_s=float(state.get("train_time_s", 0.0)),
            resumed_from=[*state.get("resumed_from", []), step],
            curve=[by_step[s] for s in sorted(by_step)],
            fit=state.get("fit"),
        )

    def save(
        self,
        algo: Any,
        metrics: EpochMetrics,
        train_time_s: float,
        resumed_from: list[int],
        fit: Mapping[str, Any] | None = None,
    ) -> Path:
        """A checkpoint of ``algo`` at its step, with what the record needs
        besides the model (``fit``: the captured last epoch of a finished
        fit, so that a resume from there only evaluates)."""
        state = {
            "epoch": metrics.epoch,
            "epoch_metrics": metrics.values,
            "train_time_s": train_time_s,
            "resumed_from": resumed_from,
            "fit": None if fit is None else dict(fit),
        }
        return self._dir.save(algo, state)

    def save_curve(self, curve: list[dict[str, Any]]) -> None:
        """The learning-curve points so far (after each new point)."""
        write_json_atomic(self.root / CURVE_FILE, {"curve": curve})

    def remove(self) -> None:
        """Delete the folder (the cell is finished, or starts afresh)."""
        shutil.rmtree(self.root, ignore_errors=True)
