"""Stop and resume: a run directory's checkpoints and a polite stop request.

A checkpoint is d3rlpy's ``save_model`` file (weights, masks, prompts,
optimizer and learning-rate state, the step counter and the schedule
horizon): loading it into the same config with ``load_model`` and fitting the
remaining steps reproduces the uninterrupted run bit for bit, because every
step's batch, dropout and mask draws are functions of (seed, step).

Files are written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint under the final name; the newest ``keep`` are kept and
``load_latest`` falls back to an older one if the newest cannot be read. A
caller that needs more than the model to resume (the benchmark harness: the
epoch's running metrics) saves it as a JSON ``state`` next to the checkpoint
and reads both back with ``load_latest_with_state``.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from .files import write_json_atomic
from .model_files import load_weights

__all__ = [
    "CheckpointDir",
    "StopRequest",
    "TrainingStopped",
    "checkpoint_step",
    "fit_resumably",
]

_NAME = re.compile(r"step-(\d+)\.pt")


class TrainingStopped(Exception):
    """Raised after the step during which a stop was requested, once its
    checkpoint is written; ``signum`` is the signal that asked."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} after step {step}")
        self.signum = signum
        self.step = step


class CheckpointDir:
    """``<run>/checkpoints/step-<n>.pt`` files of one run."""

    def __init__(self, root: str | Path, keep: int = 2):
        self.root = Path(root)
        self.keep = keep
        #: newer checkpoints the last load skipped as unreadable ("name: Error")
        self.skipped: list[str] = []

    def paths(self) -> list[Path]:
        """Checkpoint files, newest (highest step) first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.root.iterdir()
            if (m := _NAME.fullmatch(p.name))
        ]
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, algo: Any, state: Mapping[str, Any] | None = None) -> Path:
        """Write ``algo.save_model`` for its current step; prune old ones.
        ``state`` is written first, as ``step-<n>.json``: a checkpoint never
        exists without the state it was saved with."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"step-{algo.grad_step}.pt"
        if state is not None:
            write_json_atomic(path.with_suffix(".json"), state)
        tmp = self.root / f".{path.name}.tmp"
        try:
            algo.save_model(str(tmp))
            tmp.replace(path)
        except BaseException:  # disk full, a signal: no partial file is left
            tmp.unlink(missing_ok=True)
            raise
        kept = self.paths()[: self.keep]
        for old in self.paths()[self.keep :]:
            old.unlink(missing_ok=True)
        for side in self.root.glob("step-*.json"):  # pruned, or never saved
            if side.with_suffix(".pt") not in kept:
                side.unlink(missing_ok=True)
        return path

    def load_latest(self, algo: Any) -> Path:
        """Load the newest readable checkpoint into the built ``algo``."""
        return self._load_latest(algo, with_state=False)[0]

    def load_latest_with_state(self, algo: Any) -> tuple[Path, dict[str, Any]]:
        """``load_latest`` for checkpoints saved with a ``state``: the newest
        whose state and model both read, and its state."""
        path, state = self._load_latest(algo, with_state=True)
        assert state is not None
        return path, state

    def _load_latest(
        self, algo: Any, with_state: bool
    ) -> tuple[Path, dict[str, Any] | None]:
        errors: list[str] = []
        for path in self.paths():
            try:
                state = _read_state(path.with_suffix(".json")) if with_state else None
                load_weights(algo, path)  # tensors only: no code from the file
                self.skipped = errors
                return path, state
            except Exception as exc:  # a truncated or foreign file: try older
                errors.append(f"{path.name}: {type(exc).__name__}")
        detail = f" (unreadable: {', '.join(errors)})" if errors else ""
        raise FileNotFoundError(f"no readable checkpoint in {self.root}{detail}")


def _read_state(path: Path) -> dict[str, Any]:
    state = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return state


class StopRequest:
    """SIGINT/SIGTERM set a flag instead of interrupting mid-step; a second
    signal interrupts at once (``KeyboardInterrupt``). A context manager that
    restores the previous handlers; a no-op outside the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._shielded = 0
        self._pending = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        elif self._shielded:  # inside a write: interrupt once it is complete
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A block (a file write) that a second signal does not cut: the
        interrupt it asks for is raised when the block ends."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
            if self._pending and not self._shielded:
                self._pending = False
                raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def checkpoint_step(
    stop: StopRequest, step: int, every: int, save: Callable[[], Any]
) -> None:
    """The per-step rule of a resumable fit (``harmodt train`` and the
    benchmark's cells): ``save`` every ``every`` steps, and at a stop
    request, whose :class:`TrainingStopped` then ends the fit. The request is
    read once, so a signal between two reads still saves; a second signal
    waits for the file (:meth:`StopRequest.shielded`)."""
    signum = stop.signum
    if signum is not None or (every > 0 and step % every == 0):
        with stop.shielded():
            save()
    if signum is not None:
        raise TrainingStopped(signum, step)


def fit_resumably(
    algo: Any,
    data: Any,
    steps: int,
    stop: StopRequest,
    every: int,
    save: Callable[[Any], Any],
    *,
    on_step: Callable[[Any, int], None] | None = None,
    save_last_step: bool = True,
    **fit_options: Any,
) -> bool:
    """The resumable fit of ``harmodt train`` and the benchmark's cells: fit
    ``algo`` from its step to ``steps``, calling ``save(algo)`` every
    ``every`` steps and at a stop request (then :class:`TrainingStopped` ends
    the fit). ``on_step(algo, epoch)`` runs first after each step (the
    cells keep the step's metrics); ``save_last_step=False`` leaves the
    last step's file to the caller (written after the fit, with more in
    it). Returns whether it fitted at all (False when already at
    ``steps``)."""
    if algo.grad_step >= steps:
        return False

    def callback(trained: Any, epoch: int, total_step: int) -> None:
        if on_step is not None:
            on_step(trained, epoch)
        if not save_last_step and trained.grad_step >= steps:
            return
        checkpoint_step(stop, trained.grad_step, every, lambda: save(trained))

    algo.fit(data, n_steps=steps - algo.grad_step, callback=callback, **fit_options)
    return True
