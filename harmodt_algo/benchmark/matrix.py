"""A methods x datasets x seeds matrix of cells, resumable.

Everything is checked before the first cell trains, so a typo costs seconds
rather than hours; each cell is written atomically only when complete, so a
matrix can be stopped at any time and rerun to resume. A HarmoDT cell resumes
from its newest checkpoint (:mod:`.resume`) rather than from step 0; a polite
stop (SIGINT/SIGTERM) raises :class:`~harmodt_algo.checkpoints.TrainingStopped`
out of :func:`run_matrix` once that checkpoint is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._quiet import d3rlpy_warnings_only
from ..checkpoints import TrainingStopped
from ..config_checks import MAX_SEED
from ..data import MultiTaskDataset, as_multitask_dataset
from ..files import folder_problem, write_json_atomic
from ..locks import Busy, exclusive
from .cells import (
    BenchmarkSettings,
    CellKey,
    cell_path,
    checkpoint_dir,
    read_cell,
    run_cell,
)
from .datasets import DatasetSpec, Log, as_spec, ensure_dataset
from .errors import BenchmarkError
from .methods import HARMODT_METHODS, check_methods
from .resume import CellCheckpoints
from .unseen import HeldOutData, check_unseen, load_held_out

__all__ = ["MatrixSummary", "run_matrix"]


@dataclasses.dataclass
class MatrixSummary:
    """What a :func:`run_matrix` call did."""

    ran: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    out: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise BenchmarkError(f"seeds must be ints, got {seed!r}")
        if not 0 <= seed <= MAX_SEED:
            raise BenchmarkError(f"seeds must be in [0, {MAX_SEED}], got {seed}")
        out.append(int(seed))
    if not out:
        raise BenchmarkError("no seeds given")
    return list(dict.fromkeys(out))


def _check_datasets(datasets: Sequence[DatasetSpec | str]) -> list[DatasetSpec]:
    specs = [as_spec(d) for d in datasets]
    if not specs:
        raise BenchmarkError("no datasets given")
    return list(dict.fromkeys(specs))


def _finished_cells(
    cells: Sequence[CellKey],
    root: Path,
    settings: BenchmarkSettings,
    overwrite: bool,
    say: Log,
) -> dict[CellKey, Path]:
    """The cells already on disk with this budget; a finished cell made with
    another budget raises, so one folder never mixes budgets."""
    finished: dict[CellKey, Path] = {}
    mismatched: list[str] = []
    for cell in cells:
        path = cell_path(root, cell.dataset, cell.method, cell.seed)
        if overwrite or not path.exists():
            continue
        record = read_cell(path)
        if record is None:
            say(f"recomputing {cell}: {path} is unreadable")
            continue
        if record.get("budget") != settings.budget(cell.method):
            mismatched.append(
                f"{path} (has {record.get('budget')}, asked "
                f"{settings.budget(cell.method)})"
            )
            continue
        finished[cell] = path
    if mismatched:
        raise _budget_error("finished cells were made", mismatched)
    return finished


def _budget_error(what: str, mismatched: Sequence[str]) -> BenchmarkError:
    """One line naming the first three cells whose budget differs."""
    more = len(mismatched) - 3
    return BenchmarkError(
        f"{what} with a different budget: "
        + "; ".join(mismatched[:3])
        + ("" if more <= 0 else f"; and {more} more")
        + ". Use another --out, or --overwrite to recompute them"
    )


def _check_partial_cells(
    cells: Sequence[CellKey], root: Path, settings: BenchmarkSettings
) -> None:
    """HarmoDT cells stopped part-way must have been checkpointed with this
    budget (they resume, so a mismatch would mix budgets silently); checked
    before any cell trains, like finished cells. Checkpoints whose budget
    cannot be read are not resumed (the cell says so when it restarts)."""
    mismatched: list[str] = []
    for cell in cells:
        if cell.method not in HARMODT_METHODS:
            continue
        folder = checkpoint_dir(root, cell.dataset, cell.method, cell.seed)
        store = CellCheckpoints(folder, settings.budget(cell.method), 0)
        try:
            saved = store.saved_budget()
        except ValueError:
            continue
        if saved is not None and saved != store.budget:
            mismatched.append(store.mismatch(saved))
    if mismatched:
        raise _budget_error("stopped cells were checkpointed", mismatched)


#: A dataset's cells' inputs: its Minari dataset, its data, the held-out data.
_Loaded = tuple[Any, MultiTaskDataset, "HeldOutData | None"]


@dataclasses.dataclass
class _Run:
    """What the cells of one :func:`run_matrix` call share while they run,
    and the ``[k/total]`` count their log lines carry across datasets."""

    root: Path
    settings: BenchmarkSettings
    fail_fast: bool
    overwrite: bool
    say: Log
    total: int
    summary: MatrixSummary = dataclasses.field(default_factory=MatrixSummary)
    number: int = 0

    def tag(self) -> str:
        """The next cell's ``[k/total]``."""
        self.number += 1
        return f"[{self.number}/{self.total}]"

    def checkpoints(self, cell: CellKey) -> Path:
        return checkpoint_dir(self.root, cell.dataset, cell.method, cell.seed)

    def skip(self, cell: CellKey, path: Path) -> None:
        self.summary.skipped.append(path)
        shutil.rmtree(self.checkpoints(cell), ignore_errors=True)  # left over
        self.say(f"{self.tag()} skip {cell}: finished ({path})")

    def run(self, cell: CellKey, loaded: _Loaded) -> None:
        """Run one cell under its lock (``seed<k>.lock`` beside the record):
        a cell another process is computing is a :class:`BenchmarkError`
        naming it, and one it finished meanwhile is skipped."""
        path = cell_path(self.root, cell.dataset, cell.method, cell.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive(path.with_suffix(".lock"), f"cell {cell}"):
                if path.exists() and not self.overwrite:
                    self.skip(cell, path)
                    return
                self._run(cell, loaded)
        except Busy as exc:
            raise BenchmarkError(str(exc)) from None

    def _run(self, cell: CellKey, loaded: _Loaded) -> None:
        """Run one cell and write it; a failure is logged (or re-raised with
        ``fail_fast``) and writes nothing but its checkpoints, so a rerun
        retries it; a polite stop is logged and re-raised."""
        minari_dataset, data, held_out = loaded
        tag = self.tag()
        path = cell_path(self.root, cell.dataset, cell.method, cell.seed)
        folder = self.checkpoints(cell)
        if self.overwrite:
            shutil.rmtree(folder, ignore_errors=True)
        self.say(f"{tag} run {cell}: {self.settings.steps} steps ...")
        try:
            record, algo = run_cell(
                cell.method,
                cell.dataset,
                minari_dataset,
                data,
                cell.seed,
                self.settings,
                checkpoints=folder,
                log=lambda text: self.say(f"{tag} {cell}: {text}"),
                held_out=held_out,
            )
        except TrainingStopped as stopped:
            self.say(
                f"{tag} stopped {cell} after step {stopped.step}: checkpoint in "
                f"{folder}"
            )
            raise
        except Exception as exc:
            if self.fail_fast:
                raise
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            self.summary.failed.append((str(cell), reason))
            self.say(f"{tag} FAILED {cell}: {reason[:300]}")
            self.say(traceback.format_exc(limit=4))
            return
        self._save(path, record, algo, folder)
        self.say(
            f"{tag} done {cell}: success "
            f"{100 * record['success_mean']:.1f}% (train "
            f"{record['train_time_s']:.1f} s, eval "
            f"{record['eval_time_s']:.1f} s){_unseen_summary(record)} -> {path}"
        )

    def _save(
        self, path: Path, record: dict[str, Any], algo: Any, checkpoints: Path
    ) -> None:
        if self.settings.save_models:
            path.parent.mkdir(parents=True, exist_ok=True)
            algo.save(str(path.with_suffix(".d3")))
        write_json_atomic(path, record, indent=1)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the cell is complete
        self.summary.ran.append(path)


def _unseen_summary(record: dict[str, Any]) -> str:
    """``, unseen vote 20.0% tune 30.0%`` for the log line (empty without)."""
    adapt = (record.get("unseen") or {}).get("adapt") or {}
    if not adapt:
        return ""
    parts = [f"{name} {100 * r['success_mean']:.1f}%" for name, r in adapt.items()]
    return ", unseen " + " ".join(parts)


@dataclasses.dataclass
class _Sources:
    """Loads (or builds) a matrix's datasets when their cells need them: the
    training datasets one at a time, the held-out one once."""

    settings: BenchmarkSettings
    build: bool
    episodes_per_task: int
    recipe_seed: int
    max_episode_steps: int | None
    say: Log
    held_out: HeldOutData | None = None

    def _options(self) -> dict[str, Any]:
        return {
            "build": self.build,
            "episodes_per_task": self.episodes_per_task,
            "recipe_seed": self.recipe_seed,
            "max_episode_steps": self.max_episode_steps,
            "log": self.say,
        }

    def load(self, spec: DatasetSpec) -> _Loaded:
        """``spec``'s Minari dataset and data, and the held-out data (its
        tasks checked to be new) when the matrix has one."""
        minari_dataset = ensure_dataset(spec, **self._options())
        data = as_multitask_dataset(minari_dataset)
        held = self.settings.held_out
        if held is not None and self.held_out is None:
            check_unseen(data, spec.dataset_id, held)  # before a build
            self.held_out = load_held_out(held, **self._options())
        if self.held_out is not None:
            check_unseen(data, spec.dataset_id, self.held_out)
        return minari_dataset, data, self.held_out


def run_matrix(
    methods: str | Sequence[str],
    datasets: Sequence[DatasetSpec | str],
    seeds: Sequence[int],
    out: str | Path,
    settings: BenchmarkSettings,
    *,
    build_missing: bool = False,
    episodes_per_task: int = 100,
    recipe_seed: int = 0,
    max_episode_steps: int | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    quiet: bool = True,
    log: Log | None = None,
) -> MatrixSummary:
    """Run every missing cell of methods x datasets x seeds into ``out``.

    Everything is validated before any training (methods, datasets, seeds,
    options, device, and the budget of finished cells: a finished cell made
    with another budget raises, ``overwrite=True`` recomputes every cell).
    Finished cells are skipped and logged. A failing cell is logged and the
    matrix goes on (``fail_fast`` re-raises); it writes nothing, so a rerun
    retries it. HarmoDT cells checkpoint every ``settings.checkpoint_every``
    steps into a hidden folder next to the cell and resume from it (one made
    with another budget raises before any training, unless ``overwrite``);
    SIGINT/SIGTERM during such a cell finish the step, checkpoint and raise
    :class:`~harmodt_algo.checkpoints.TrainingStopped`.
    With ``settings.held_out`` the held-out dataset is loaded (or built, like
    the training data) once, and each training dataset's tasks are checked
    to be disjoint from it before its cells train.
    """
    say: Log = log or (lambda text: print(text, flush=True))
    names = check_methods(methods)
    specs = _check_datasets(datasets)
    seed_list = _check_seeds(seeds)
    settings.validate()
    root = Path(out)
    problem = folder_problem(root)
    if problem is not None:
        raise BenchmarkError(f"--out {str(root)!r} {problem}")

    # seeds outer: a matrix stopped part-way has every method for its first seeds
    cells = [CellKey(s, m, k) for s in specs for k in seed_list for m in names]
    finished = _finished_cells(cells, root, settings, overwrite, say)
    if settings.checkpoint_every and not overwrite:
        todo = [c for c in cells if c not in finished]
        _check_partial_cells(todo, root, settings)
    run = _Run(root, settings, fail_fast, overwrite, say, total=len(cells))
    sources = _Sources(
        settings, build_missing, episodes_per_task, recipe_seed, max_episode_steps, say
    )
    quiet_ctx = d3rlpy_warnings_only() if quiet else contextlib.nullcontext()
    with quiet_ctx:
        for spec in specs:
            ours = [c for c in cells if c.dataset == spec]
            for cell in ours:
                if cell in finished:
                    run.skip(cell, finished[cell])
            todo = [c for c in ours if c not in finished]
            if not todo:
                continue
            loaded = sources.load(spec)
            for cell in todo:
                run.run(cell, loaded)
    summary = run.summary
    say(
        f"ran {len(summary.ran)} cell(s), skipped {len(summary.skipped)} finished, "
        f"{len(summary.failed)} failed"
    )
    return summary
