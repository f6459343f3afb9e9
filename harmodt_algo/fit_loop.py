"""The fit loop: d3rlpy's transformer ``fit`` made multi-task, resumable and
data-parallel.

Kept apart from the Algo because it is one job with its own state (the
logger, the data-parallel slice, the epoch means) and reads the Algo only
through its public surface (``update``, ``update_masks``, ``for_task``,
``grad_step``, ``config``). Every step's batch and dropout seed are a
function of (seed, step), so a resumed run trains exactly as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from d3rlpy.algos.transformer.action_samplers import TransformerActionSampler
from d3rlpy.base import save_config
from d3rlpy.logging import (
    D3RLPyLogger,
    FileAdapterFactory,
    LoggerAdapterFactory,
    NoopAdapterFactory,
)
from d3rlpy.metrics import evaluate_transformer_with_environment
from d3rlpy.types import GymEnv, NDArray
from tqdm.auto import tqdm

from .data import MultiTaskDataset
from .naming import metric_key

if TYPE_CHECKING:
    from .harmodt import HarmoDT

__all__ = [
    "FitLoop",
    "FitOptions",
    "balanced_task_ids",
    "epoch_sizes",
    "fit_quietly",
    "process",
    "round_robin_task",
    "step_seed",
    "task_schedule_ids",
]

_Fits = TypeVar("_Fits", bound=Any)  # HarmoDT, or any d3rlpy algorithm
Evaluators = Mapping[str, Callable[[Any], "float | Mapping[str, float]"]]


def fit_quietly(algo: _Fits, dataset: Any, n_steps: int, **options: Any) -> _Fits:
    """``algo.fit`` for ``n_steps`` with no log folder and no progress bar,
    one epoch unless ``n_steps_per_epoch`` says otherwise: what a script or
    test calls when it only needs the trained weights. Returns ``algo``."""
    options.setdefault("n_steps_per_epoch", n_steps)
    algo.fit(
        dataset,
        n_steps=n_steps,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
        **options,
    )
    return algo


def process() -> tuple[int, int]:
    """(rank, world size) of a torch.distributed run; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_sizes(start: int, n_steps: int, per_epoch: int) -> list[int]:
    """Steps of each epoch of a fit from ``start``: epochs end at multiples of
    ``per_epoch`` (absolute steps) and at ``start + n_steps``."""
    sizes = []
    size = per_epoch - start % per_epoch
    remaining = n_steps
    while remaining > 0:
        sizes.append(min(size, remaining))
        remaining -= sizes[-1]
        size = per_epoch
    return sizes


def step_seed(seed: int, step: int, stream: int) -> list[int]:
    """Seed sequence of one step: sampling is a function of (seed, step), so a
    resumed run draws exactly what an uninterrupted one would. Public so that a
    script driving ``update`` itself (benchmarks/train_throughput.py) draws the
    batches ``fit`` would."""
    return [seed, step, stream]


def round_robin_task(step: int, num_tasks: int) -> int:
    """The task trained at optimizer step ``step`` (0-based) under round-robin."""
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be positive, got {num_tasks}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step % num_tasks


def balanced_task_ids(
    batch_size: int, num_tasks: int, rng: np.random.Generator
) -> NDArray:
    """Task ids for a task-balanced mixed batch, sorted ascending, shape (B,).

    Every task appears ``B // T`` or ``B // T + 1`` times; which tasks get the
    ``B % T`` extra slots is drawn from ``rng`` without replacement. Unlike
    d3rlpy's sampler (uniform over transitions), large tasks do not dominate.
    The ids are sorted so that rows of one task are contiguous (handy for
    grouped per-task computation); the order does not matter to the loss.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be positive, got {num_tasks}")
    counts = np.full(num_tasks, batch_size // num_tasks, dtype=np.int64)  # (T,)
    remainder = batch_size % num_tasks
    if remainder:
        counts[rng.choice(num_tasks, size=remainder, replace=False)] += 1
    return np.repeat(np.arange(num_tasks, dtype=np.int64), counts)  # (B,)


def task_schedule_ids(
    schedule: str,
    batch_size: int,
    step: int,
    num_tasks: int,
    rng: np.random.Generator,
) -> NDArray:
    """Dataset task of each sequence of one step's global batch (B·W,):
    one task per step in turn (``round_robin``) or balanced (``mixed``)."""
    if schedule == "round_robin":
        return np.full(batch_size, round_robin_task(step, num_tasks), dtype=np.int64)
    return balanced_task_ids(batch_size, num_tasks, rng)


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """d3rlpy's ``fit`` options that the loop reads after set-up."""

    n_steps_per_epoch: int = 10000
    show_progress: bool = True
    eval_env: Mapping[str, GymEnv] | None = None
    eval_target_return: float | Mapping[str, float] | None = None
    eval_action_sampler: TransformerActionSampler | None = None
    save_interval: int = 1
    callback: Callable[[Any, int, int], None] | None = None
    evaluators: Evaluators | None = None


class FitLoop:
    """One ``fit`` call: its logger, data-parallel slice and the metrics it
    logged (the Algo keeps the last loop for ``epoch_metrics``)."""

    def __init__(
        self,
        algo: HarmoDT,
        data: MultiTaskDataset,
        task_index: NDArray,  # (T_d,) model task index of each dataset task
        options: FitOptions,
        experiment_name: str | None = None,
        with_timestamp: bool = True,
        logger_adapter: LoggerAdapterFactory | None = None,
    ):
        # data-parallel (torchrun + enable_ddp): every rank draws the same
        # global batch of batch_size x world sequences and trains on its slice;
        # only rank 0 logs, evaluates and saves
        self.rank, self.world = process()
        if self.rank != 0:
            logger_adapter = NoopAdapterFactory()
            options = dataclasses.replace(options, eval_env=None, evaluators=None)
        self.algo = algo
        self.data = data
        self.task_index = task_index
        self.options = options
        self.logger = D3RLPyLogger(
            algo=algo,
            adapter_factory=logger_adapter or FileAdapterFactory(),
            experiment_name=experiment_name or algo.__class__.__name__,
            n_steps_per_epoch=options.n_steps_per_epoch,
            with_timestamp=with_timestamp,
        )
        self.epoch_metrics: list[tuple[int, dict[str, float]]] = []
        self.last_step_metrics: dict[str, float] = {}

    def run(self, start: int, n_steps: int) -> None:
        """``n_steps`` steps from ``start``. Epochs end at multiples of
        ``n_steps_per_epoch`` of the *absolute* step, so a resumed run
        evaluates and logs where the uninterrupted one did."""
        save_config(self.algo, self.logger)
        per_epoch = self.options.n_steps_per_epoch
        sizes = epoch_sizes(start, n_steps, per_epoch)
        done_epochs = start // per_epoch
        n_epochs = done_epochs + len(sizes)
        total_step = 0
        for epoch, epoch_steps in enumerate(sizes, start=done_epochs + 1):
            range_gen = tqdm(
                range(epoch_steps),
                disable=not self.options.show_progress,
                desc=f"Epoch {epoch}/{n_epochs}",
            )
            total_step = self._epoch(range_gen, epoch, total_step)
            self._evaluate_epoch()
            self.epoch_metrics.append(
                (epoch, self.logger.commit(epoch, start + total_step))
            )
            if epoch % self.options.save_interval == 0 or epoch == n_epochs:
                self.logger.save_model(start + total_step, self.algo)
        self.logger.close()

    def _epoch(self, range_gen: tqdm, epoch: int, total_step: int) -> int:
        """The steps of one epoch (``range_gen``), logged and reported to the
        callback; returns the steps this ``fit`` call has taken so far."""
        epoch_loss: dict[str, list[float]] = defaultdict(list)
        callback = self.options.callback
        for itr in range_gen:
            with self.logger.measure_time("step"):
                metrics = self._step()
                self.last_step_metrics = metrics
                for name, val in metrics.items():
                    self.logger.add_metric(name, val)
                    epoch_loss[name].append(val)
                if itr % 10 == 0:
                    range_gen.set_postfix({"loss": float(np.mean(epoch_loss["loss"]))})
            total_step += 1
            if callback:
                callback(self.algo, epoch, total_step)
        return total_step

    def _step(self) -> dict[str, float]:
        """One gradient step, then the mask update when one is due. The batch
        and the dropout seed depend only on (seed, step)."""
        algo, cfg = self.algo, self.algo.config
        step = algo.grad_step
        with self.logger.measure_time("sample_batch"):
            rng = np.random.default_rng(step_seed(cfg.seed, step, 0))
            ds_ids = task_schedule_ids(  # (B·W,)
                cfg.task_schedule,
                cfg.batch_size * self.world,
                step,
                self.data.num_tasks,
                rng,
            )
            rows = slice(self.rank * cfg.batch_size, (self.rank + 1) * cfg.batch_size)
            batch = self.data.sample_batch(ds_ids, cfg.context_size, rng, rows)
            ds_ids = ds_ids[rows]  # (B,) this rank's sequences
        torch.manual_seed(int(rng.integers(2**62)) + self.rank)  # dropout
        with self.logger.measure_time("algorithm_update"):
            metrics = algo.update(batch, self.task_index[ds_ids])
        step = algo.grad_step
        if cfg.mask_interval > 0 and step > 0 and step % cfg.mask_interval == 0:
            with self.logger.measure_time("mask_update"):
                metrics.update(algo.update_masks(self.data, step))
        return metrics

    def _evaluate_epoch(self) -> None:
        """Log the end-of-epoch scores: environment returns per task, then each
        evaluator's (a float under its name, a mapping metric by metric)."""
        if self.options.eval_env:
            for name, score in self._environment_scores(self.options.eval_env).items():
                self.logger.add_metric(name, score)
        for name, evaluator in (self.options.evaluators or {}).items():
            result = evaluator(self.algo)
            if isinstance(result, Mapping):
                for key, value in result.items():
                    self.logger.add_metric(key, float(value))
            else:
                self.logger.add_metric(name, float(result))

    def _environment_scores(self, envs: Mapping[str, GymEnv]) -> dict[str, float]:
        """d3rlpy's ``evaluate_transformer_with_environment`` per task; the
        target return defaults to the task's best return in the data."""
        target = self.options.eval_target_return
        scores = {}
        for name, env in envs.items():
            if target is None:
                ret = self.data.max_return(self.data.task_names.index(name))
            elif isinstance(target, Mapping):
                ret = target[name]
            else:
                ret = float(target)
            actor = self.algo.for_task(name).as_stateful_wrapper(
                ret, self.options.eval_action_sampler
            )
            scores[metric_key("environment", name)] = (
                evaluate_transformer_with_environment(algo=actor, env=env)
            )
        scores["environment"] = float(np.mean(list(scores.values())))
        return scores
