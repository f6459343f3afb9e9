"""Seed statistics of the benchmark tables against hand computations."""

from __future__ import annotations

import math

import pytest

from harmodt_algo.benchmark.stats import (
    format_paired,
    mean_ci,
    paired_difference,
)


def test_mean_ci_is_the_t_interval() -> None:
    stat = mean_ci([1.0, 2.0, 6.0])
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    assert stat.mean == 3.0 and stat.n == 3
    assert stat.std == pytest.approx(sd)
    assert stat.half_width == pytest.approx(4.303 * sd / math.sqrt(3))
    single = mean_ci([4.0])
    assert single.mean == 4.0 and math.isnan(single.std)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="t-quantiles"):
        mean_ci(list(range(12)))


def test_paired_difference_uses_the_common_seeds() -> None:
    diff = paired_difference(
        {0: 5.0, 1: 7.0, 2: 9.0, 4: 100.0}, {0: 4.0, 1: 4.0, 2: 4.0}
    )
    assert diff is not None and diff.n == 3 and diff.mean == pytest.approx(3.0)
    assert paired_difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None
    text = format_paired(diff)
    assert text.startswith("+3.0 [") and text.endswith("(n=3)")
    assert format_paired(None) == "—"
