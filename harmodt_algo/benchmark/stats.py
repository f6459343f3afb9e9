"""Seed statistics for benchmark tables: a mean with its spread, and paired
per-seed differences with a 95 % t-interval.

Why paired: cells of one seed share the training seed, the data order and the
evaluation goals, so the per-seed difference between two methods removes most
of the seed-to-seed noise that separate means carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["MeanCI", "mean_ci", "paired_difference", "format_paired"]

#: t_{0.975, df} for df = 1 ... 10 (two-sided 95 % intervals)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


class MeanCI(NamedTuple):
    """A mean with its spread; ``std`` and ``half_width`` (of the 95 %
    t-interval) are nan for fewer than two values."""

    mean: float
    std: float
    half_width: float
    n: int


def mean_ci(values: Sequence[float] | np.ndarray) -> MeanCI:
    """Mean, sample standard deviation (ddof 1) and the half-width of the 95 %
    t-interval of the mean."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    n = int(arr.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(arr.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, n)
    if n - 1 > len(_T975):
        raise ValueError(f"mean_ci knows t-quantiles up to {len(_T975) + 1} values")
    sd = float(arr.std(ddof=1))
    return MeanCI(mean, sd, _T975[n - 2] * sd / math.sqrt(n), n)


def paired_difference(
    values: Mapping[int, float], reference: Mapping[int, float]
) -> MeanCI | None:
    """``values - reference`` over the seeds both have (None for fewer than
    two: no interval)."""
    seeds = sorted(set(values) & set(reference))
    if len(seeds) < 2:
        return None
    return mean_ci([values[s] - reference[s] for s in seeds])


def format_paired(diff: MeanCI | None, digits: int = 1) -> str:
    """``+1.2 [-3.4, +5.6] (n=5)``, or ``—`` without an interval."""
    if diff is None:
        return "—"
    m, h = diff.mean, diff.half_width
    return f"{m:+.{digits}f} [{m - h:+.{digits}f}, {m + h:+.{digits}f}] (n={diff.n})"
