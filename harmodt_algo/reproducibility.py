"""Is a model's mask choice signal or noise? Two independent estimates, compared.

The mask update drops and grows the entries its harmony estimate ranks
lowest and highest. If two estimates from independent data choose mostly
different entries, the choice is noise. :func:`mask_reproducibility`
computes one update's drop and grow sets twice, with the model's own
estimator and scoring, from independent data, and returns their Jaccard
overlap beside the overlap two random sets of the same size would have.
The model is not changed (the accumulated estimator trains copies).

Used by the benchmark cells (``masks.reproducibility``) and by
``benchmarks/harmony_estimator.py``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .fit_loop import fit_quietly

if TYPE_CHECKING:  # pragma: no cover
    from .data import MultiTaskDataset
    from .harmodt import HarmoDT

__all__ = [
    "batch_gradients",
    "chance_jaccard",
    "continued_gradients",
    "jaccard",
    "mask_reproducibility",
    "update_sets",
]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over tasks of ``|a ∩ b| / |a ∪ b|`` for ``(T, N)`` bool sets."""
    inter = (a & b).sum(dim=1, dtype=torch.float64)
    union = (a | b).sum(dim=1, dtype=torch.float64).clamp(min=1.0)
    return float((inter / union).mean())


def chance_jaccard(k: float, pool: float) -> float:
    """Expected Jaccard overlap of two random ``k``-subsets of ``pool`` items."""
    if pool <= 0 or k <= 0:
        return 0.0
    p = min(k / pool, 1.0)
    return p / (2 - p)


def batch_gradients(
    algo: HarmoDT, data: MultiTaskDataset, size: int, seed: int
) -> torch.Tensor:
    """Each task's effective-weight gradient on a fresh batch of ``size``
    sequences (the ``batch`` estimator, dropout as configured). (T, N)."""
    impl = algo.impl
    assert impl is not None
    rng = np.random.default_rng(seed)
    batches = [
        algo._to_torch(
            data.sample_batch(
                np.full(size, data.task_names.index(name)),
                algo.config.context_size,
                rng,
            )
        )
        for name in algo.task_names
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return impl.task_gradients(batches)


def continued_gradients(
    algo: HarmoDT, data: MultiTaskDataset, steps: int, seed: int
) -> tuple[torch.Tensor, HarmoDT]:
    """The ``accumulated`` estimator's running means after ``steps`` more
    training steps of a *copy* of ``algo`` that samples with ``seed``; the
    copy is returned too (the model the estimate belongs to)."""
    twin = copy.deepcopy(algo)
    impl = twin.impl
    assert impl is not None and impl.modules.masks.accumulates
    twin.config.seed = seed
    twin.config.mask_interval = 0  # estimate only: no update inside the window
    impl.modules.masks.reset_accumulator()
    with torch.random.fork_rng(devices=[]):
        fit_quietly(twin, data, steps)
    grads, _ = impl.modules.masks.mean_gradients()
    return grads, twin


def update_sets(
    algo: HarmoDT, grads: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dropped, grown) ``(T, N)`` bool sets of one update of ``k`` entries
    per task that ``grads`` would make, with the model's own scoring."""
    impl = algo.impl
    assert impl is not None
    old = impl.flat_masks()
    counts = torch.full((old.shape[0],), k, dtype=torch.long)
    valid = torch.ones(old.shape[0], dtype=torch.bool, device=old.device)
    generator = torch.Generator().manual_seed(0)
    new, _ = impl.propose_masks(grads, valid, counts, generator)
    return old & ~new, ~old & new


def _peak_count(algo: HarmoDT) -> int:
    """The configured change per task at the schedule's peak."""
    cfg = algo.config
    if cfg.change_count > 0:
        return int(cfg.change_count)
    assert algo.impl is not None
    active = float(algo.impl.flat_masks().sum(dim=1, dtype=torch.float64).mean())
    return max(1, math.floor(cfg.change_fraction * active))


def mask_reproducibility(
    algo: HarmoDT, data: MultiTaskDataset, seed: int = 12345
) -> dict[str, Any]:
    """Drop/grow-set Jaccard of two independent estimates, and chance."""
    impl = algo.impl
    assert impl is not None
    cfg = algo.config
    k = _peak_count(algo)
    if cfg.harmony_estimator == "accumulated":
        window = max(cfg.mask_interval, len(algo.task_names))
        g1, _ = continued_gradients(algo, data, window, seed)
        g2, _ = continued_gradients(algo, data, window, seed + 1)
        source = f"{window} more training steps, twice"
    else:
        g1 = batch_gradients(algo, data, cfg.mask_batch_size, seed)
        g2 = batch_gradients(algo, data, cfg.mask_batch_size, seed + 1)
        source = f"two fresh batches of {cfg.mask_batch_size} per task"
    d1, r1 = update_sets(algo, g1, k)
    d2, r2 = update_sets(algo, g2, k)
    old = impl.flat_masks()
    protected = impl.protected_entries()
    droppable = old if protected is None else old & ~protected.unsqueeze(0)
    return {
        "k": k,
        "estimates": source,
        "drop_jaccard": jaccard(d1, d2),
        "grow_jaccard": jaccard(r1, r2),
        "drop_chance": chance_jaccard(
            k, float(droppable.sum(dim=1, dtype=torch.float64).mean())
        ),
        "grow_chance": chance_jaccard(
            k, float((~old).sum(dim=1, dtype=torch.float64).mean())
        ),
    }
