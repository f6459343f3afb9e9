"""The mask-choice reproducibility check: its formulas, and that it leaves the
model untouched for both estimators."""

from __future__ import annotations

import pytest
import torch

from harmodt_algo import HarmoDT
from harmodt_algo.reproducibility import (
    chance_jaccard,
    jaccard,
    mask_reproducibility,
)

from .test_harmodt import fit, small, synthetic


def test_jaccard_and_chance() -> None:
    a = torch.tensor([[True, True, False, False], [True, False, False, False]])
    b = torch.tensor([[True, False, True, False], [True, False, False, False]])
    assert jaccard(a, b) == pytest.approx((1 / 3 + 1.0) / 2)
    # two random 10-subsets of 1000: E|A∩B| = 0.1, Jaccard ≈ 0.1 / 19.9
    assert chance_jaccard(10, 1000) == pytest.approx(0.01 / 1.99)
    assert chance_jaccard(0, 10) == 0.0 and chance_jaccard(5, 5) == 1.0


@pytest.mark.parametrize("estimator", ["batch", "accumulated"])
def test_reproducibility_leaves_the_model_unchanged(estimator: str) -> None:
    data = synthetic()
    algo = fit(
        HarmoDT(small(harmony_estimator=estimator, mask_interval=3, change_count=20)),
        data,
        n_steps=6,
    )
    assert algo.impl is not None
    state = {
        k: v.clone() for k, v in algo.impl.modules.transformer.state_dict().items()
    }
    masks = algo.impl.flat_masks().clone()
    step = algo.grad_step
    rng_state = torch.get_rng_state()
    out = mask_reproducibility(algo, data)
    assert out["k"] == 20 and 0.0 <= out["drop_jaccard"] <= 1.0
    assert out["drop_chance"] < 0.1
    assert algo.grad_step == step and torch.equal(algo.impl.flat_masks(), masks)
    for key, value in algo.impl.modules.transformer.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(torch.get_rng_state(), rng_state)
    # deterministic for a seed (it forks the global RNG)
    again = mask_reproducibility(algo, data, seed=7)
    assert again == mask_reproducibility(algo, data, seed=7)
