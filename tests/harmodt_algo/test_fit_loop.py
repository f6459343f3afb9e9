"""The fit loop's pure parts: epochs at absolute steps, per-step seeds and
the task schedules."""

from __future__ import annotations

import numpy as np
import pytest

from harmodt_algo.fit_loop import (
    balanced_task_ids,
    epoch_sizes,
    round_robin_task,
    step_seed,
    task_schedule_ids,
)


def test_epochs_end_at_absolute_multiples() -> None:
    assert epoch_sizes(0, 25, 10) == [10, 10, 5]
    # a run resumed at step 7 ends its first epoch at 10, as the uninterrupted one
    assert epoch_sizes(7, 18, 10) == [3, 10, 5]
    assert epoch_sizes(10, 0, 10) == []


def test_step_seed_depends_on_seed_step_and_stream_only() -> None:
    assert step_seed(3, 5, 0) != step_seed(3, 5, 1) != step_seed(3, 6, 0)
    a = np.random.default_rng(step_seed(1, 9, 0)).random(3)
    assert np.array_equal(a, np.random.default_rng(step_seed(1, 9, 0)).random(3))


def test_task_schedule_ids_round_robin_and_mixed() -> None:
    rng = np.random.default_rng(0)
    assert task_schedule_ids("round_robin", 4, 5, 3, rng).tolist() == [2, 2, 2, 2]
    mixed = task_schedule_ids("mixed", 7, 5, 3, rng)
    assert sorted(np.bincount(mixed, minlength=3).tolist()) == [2, 2, 3]


def test_round_robin_task() -> None:
    assert [round_robin_task(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        round_robin_task(0, 0)


@pytest.mark.parametrize(("batch", "tasks"), [(8, 3), (10, 5), (7, 10), (256, 50)])
def test_balanced_task_ids_counts(batch: int, tasks: int) -> None:
    ids = balanced_task_ids(batch, tasks, np.random.default_rng(0))
    assert ids.shape == (batch,) and ids.dtype == np.int64
    counts = np.bincount(ids, minlength=tasks)
    assert counts.sum() == batch
    assert set(counts.tolist()) <= {batch // tasks, -(-batch // tasks)}
    assert np.all(np.diff(ids) >= 0)  # sorted: each task's rows contiguous
    again = balanced_task_ids(batch, tasks, np.random.default_rng(0))
    np.testing.assert_array_equal(ids, again)


def test_balanced_task_ids_spreads_the_remainder() -> None:
    rng = np.random.default_rng(1)
    extra = np.zeros(5, int)
    for _ in range(200):
        extra += np.bincount(balanced_task_ids(7, 5, rng), minlength=5) - 1
    assert extra.sum() == 400
    assert extra.min() > 40  # every task gets the extra slot sometimes (~80)
