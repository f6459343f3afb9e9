"""Gradient surgery (issue 23): PCGrad and CAGrad against their papers'
properties, and the two presets on the Decision Transformer."""

from __future__ import annotations

from pathlib import Path

import d3rlpy
import numpy as np
import pytest
import torch

from harmodt_algo import PRESETS, HarmoDT, HarmoDTConfig
from harmodt_algo.surgery import cagrad, combine, pcgrad

from .test_harmodt import fit, small, synthetic


def _opposing() -> torch.Tensor:
    """Two tasks whose gradients conflict so much that their plain mean
    opposes the first."""
    return torch.tensor([[1.0, 0.0, 0.1], [-3.0, 0.1, 0.0]])


def test_pcgrad_update_never_opposes_a_task() -> None:
    grads = _opposing()
    assert float(grads.mean(dim=0) @ grads[0]) < 0  # the plain mean opposes it
    update = pcgrad(grads, torch.Generator().manual_seed(0))
    for g in grads:
        assert float(update @ g) >= 0.0
    # agreeing gradients are left alone: the plain mean
    agree = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(pcgrad(agree, torch.Generator()), agree.mean(dim=0))


def test_pcgrad_with_many_tasks_is_finite() -> None:
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(6, 20, generator=gen)
    update = pcgrad(grads, torch.Generator().manual_seed(2))
    assert update.shape == (20,)
    assert torch.isfinite(update).all()


def test_cagrad_with_c_zero_is_the_plain_mean() -> None:
    grads = torch.randn(4, 9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(cagrad(grads, 0.0), grads.mean(dim=0))


def test_cagrad_matches_its_objective_on_two_tasks() -> None:
    """The weights solve min over the simplex of g_w·g0 + c|g0||g_w| (checked
    on a fine grid), and the update follows the paper's formula."""
    grads, c = _opposing(), 0.5
    g0 = grads.mean(dim=0)
    g0_norm = float(g0.norm())
    best, best_w = np.inf, 0.0
    for w in np.linspace(0.0, 1.0, 20001):
        gw = w * grads[0] + (1 - w) * grads[1]
        value = float(gw @ g0) + c * g0_norm * float(gw.norm())
        if value < best:
            best, best_w = value, float(w)
    gw = best_w * grads[0] + (1 - best_w) * grads[1]
    expected = (g0 + c * g0_norm / gw.norm() * gw) / (1 + c * c)
    torch.testing.assert_close(cagrad(grads, c), expected, atol=2e-3, rtol=2e-3)
    # the worst task improves more than under the plain mean
    worst = min(float(cagrad(grads, c) @ g) for g in grads)
    assert worst > min(float(g0 @ g) for g in grads)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="c must be"):
        cagrad(_opposing(), -1.0)
    with pytest.raises(ValueError, match="unknown gradient surgery"):
        combine("mgda", _opposing(), torch.Generator(), 0.5)
    with pytest.raises(ValueError, match="task_schedule='mixed'"):
        HarmoDTConfig(gradient_surgery="pcgrad", task_names=["a"]).validate()
    with pytest.raises(ValueError, match="cagrad_c"):
        HarmoDTConfig(cagrad_c=-0.1, task_names=["a"]).validate()


# ------------------------------------------------------------------ presets


def _trained(**overrides: object) -> HarmoDT:
    no_dropout = dict(attn_dropout=0.0, resid_dropout=0.0, embed_dropout=0.0)
    algo = HarmoDT(small(**{**no_dropout, "batch_size": 6, **overrides}))
    fit(algo, synthetic(num_tasks=3), n_steps=3)
    return algo


def test_cagrad_c_zero_trains_as_the_plain_mixed_model() -> None:
    dense = {k: v for k, v in PRESETS["cagrad"].items() if k != "cagrad_c"}
    surgery = _trained(**{**dense, "cagrad_c": 0.0})
    plain = _trained(**{**dense, "gradient_surgery": "none"})
    assert surgery.impl is not None and plain.impl is not None
    for a, b in zip(
        surgery.impl._net.parameters(), plain.impl._net.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["pcgrad", "cagrad"])
def test_the_presets_train_save_and_load(preset: str, tmp_path: Path) -> None:
    algo = _trained(**PRESETS[preset])
    plain = _trained(**{**PRESETS[preset], "gradient_surgery": "none"})
    assert algo.impl is not None and plain.impl is not None
    pairs = zip(algo.impl._net.parameters(), plain.impl._net.parameters(), strict=True)
    moved = [not torch.equal(a, b) for a, b in pairs]
    assert any(moved)  # the surgery changed the updates
    path = tmp_path / f"{preset}.d3"
    algo.save(str(path))
    loaded = d3rlpy.load_learnable(str(path))
    assert loaded.config.gradient_surgery == preset
    pairs = zip(loaded.impl._net.parameters(), algo.impl._net.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
