"""Tests for harmodt_algo.masks: densities, sampling, scores, drop-and-grow."""

from __future__ import annotations

import math

import pytest
import torch

from harmodt_algo import masks as M


def transformer_shapes(embed: int = 128, layers: int = 3) -> dict[str, tuple[int, ...]]:
    """Block parameters of a small GPT stack (what HarmoDT masks)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"blocks.{i}."
        shapes[p + "attn.qkv.weight"] = (3 * embed, embed)
        shapes[p + "attn.qkv.bias"] = (3 * embed,)
        shapes[p + "attn.proj.weight"] = (embed, embed)
        shapes[p + "attn.proj.bias"] = (embed,)
        shapes[p + "mlp.fc.weight"] = (4 * embed, embed)
        shapes[p + "mlp.fc.bias"] = (4 * embed,)
        shapes[p + "mlp.proj.weight"] = (embed, 4 * embed)
        shapes[p + "mlp.proj.bias"] = (embed,)
        for ln in ("ln1", "ln2"):
            shapes[p + ln + ".weight"] = (embed,)
            shapes[p + ln + ".bias"] = (embed,)
    return shapes


def weighted_density(
    shapes: dict[str, tuple[int, ...]], densities: dict[str, float]
) -> float:
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    return sum(densities[n] * sizes[n] for n in shapes) / sum(sizes.values())


# --------------------------------------------------------------------------- #
# Densities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("density", [0.05, 0.3, 0.8, 0.95])
def test_erk_total_density_matches_target(density: float) -> None:
    shapes = transformer_shapes()
    dens = M.erk_densities(shapes, density)
    assert set(dens) == set(shapes)
    assert abs(weighted_density(shapes, dens) - density) < 1e-6
    assert all(0.0 < d <= 1.0 for d in dens.values())


def test_erk_small_layers_denser_and_saturation_resolved() -> None:
    shapes = transformer_shapes()
    dens = M.erk_densities(shapes, 0.8)
    p = "blocks.0."
    # 1-D parameters have sum/prod = 1 and saturate.
    assert dens[p + "attn.qkv.bias"] == 1.0
    assert dens[p + "ln1.weight"] == 1.0
    # The square (128, 128) projection has the largest 2-D ratio and saturates
    # at density 0.8, which forces a re-solve of ε for the rest.
    assert dens[p + "attn.proj.weight"] == 1.0
    qkv = dens[p + "attn.qkv.weight"]  # ratio 512 / 49152
    fc = dens[p + "mlp.fc.weight"]  # ratio 640 / 65536
    assert 0.0 < fc < qkv < 1.0
    # Unsaturated layers stay proportional to sum(dims)/prod(dims).
    assert qkv / fc == pytest.approx((512 / 49152) / (640 / 65536), rel=1e-12)
    assert dens[p + "mlp.proj.weight"] == pytest.approx(fc, rel=1e-12)
    # Identical blocks get identical densities.
    assert dens["blocks.2.mlp.fc.weight"] == fc


def test_erk_resolve_by_hand() -> None:
    # a: ratio 4/4 = 1, b: ratio 20/100 = 0.2, total 104, target 52.
    # First ε = 52 / (4 + 20) ≈ 2.17 saturates a; then ε = (52 - 4) / 20 = 2.4.
    dens = M.erk_densities({"a": (2, 2), "b": (10, 10)}, 0.5)
    assert dens["a"] == 1.0
    assert dens["b"] == pytest.approx(0.48, abs=1e-12)


def test_erk_full_density_and_validation() -> None:
    shapes = transformer_shapes(embed=16, layers=1)
    assert set(M.erk_densities(shapes, 1.0).values()) == {1.0}
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density"):
            M.erk_densities(shapes, bad)
    with pytest.raises(ValueError, match="empty"):
        M.erk_densities({"x": (0, 3)}, 0.5)


def test_uniform_and_dispatch() -> None:
    shapes = transformer_shapes(embed=16, layers=1)
    assert set(M.uniform_densities(shapes, 0.7).values()) == {0.7}
    assert M.layer_densities("uniform", shapes, 0.7) == M.uniform_densities(shapes, 0.7)
    assert M.layer_densities("erk", shapes, 0.7) == M.erk_densities(shapes, 0.7)
    assert set(M.layer_densities("dense", shapes, 0.3).values()) == {1.0}
    with pytest.raises(ValueError, match="erk"):
        M.layer_densities("gaussian", shapes, 0.5)
    with pytest.raises(ValueError):
        M.uniform_densities(shapes, 0.0)


# --------------------------------------------------------------------------- #
# Sampling and flattening
# --------------------------------------------------------------------------- #
def test_sample_masks_shape_density_and_independence() -> None:
    shapes = {"big": (512, 128), "bias": (512,), "mid": (64, 64)}
    dens = {"big": 0.6, "bias": 1.0, "mid": 0.3}
    masks = M.sample_masks(shapes, dens, 4, torch.Generator().manual_seed(0))
    assert list(masks) == sorted(shapes)
    for name, shape in shapes.items():
        assert masks[name].shape == (4, *shape)
        assert masks[name].dtype == torch.bool
    assert bool(masks["bias"].all())
    per_task = masks["big"].reshape(4, -1).float().mean(dim=1)
    assert torch.allclose(per_task, torch.full((4,), 0.6), atol=0.01)
    assert abs(masks["mid"].float().mean().item() - 0.3) < 0.02
    assert not torch.equal(masks["big"][0], masks["big"][1])
    assert not torch.equal(masks["mid"][2], masks["mid"][3])


def test_sample_masks_deterministic_and_order_independent() -> None:
    shapes = {"a": (32, 16), "b": (8,), "c": (16, 16)}
    dens = {"a": 0.5, "b": 0.9, "c": 0.25}
    m1 = M.sample_masks(shapes, dens, 3, torch.Generator().manual_seed(7))
    reversed_shapes = dict(reversed(list(shapes.items())))
    m2 = M.sample_masks(reversed_shapes, dens, 3, torch.Generator().manual_seed(7))
    m3 = M.sample_masks(shapes, dens, 3, torch.Generator().manual_seed(8))
    for name in shapes:
        assert torch.equal(m1[name], m2[name])
    assert not torch.equal(m1["a"], m3["a"])


def test_sample_masks_dense_layer_uses_no_randomness() -> None:
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    only = M.sample_masks({"b": (20, 20)}, {"b": 0.5}, 2, g1)
    with_dense = M.sample_masks(
        {"a": (5, 5), "b": (20, 20)}, {"a": 1.0, "b": 0.5}, 2, g2
    )
    assert torch.equal(only["b"], with_dense["b"])
    assert bool(with_dense["a"].all())


def test_sample_masks_erk_overall_density() -> None:
    shapes = transformer_shapes()
    dens = M.layer_densities("erk", shapes, 0.8)
    masks = M.sample_masks(shapes, dens, 2, torch.Generator().manual_seed(1))
    assert abs(M.mask_density(masks) - 0.8) < 0.005
    assert M.task_densities(masks).shape == (2,)


def test_flatten_unflatten_round_trip() -> None:
    shapes = {"w": (3, 4), "b": (3,), "z": (2, 2, 2)}
    masks = M.sample_masks(
        shapes, dict.fromkeys(shapes, 0.5), 2, torch.Generator().manual_seed(0)
    )
    flat = M.flatten_masks(masks)
    assert flat.shape == (2, 12 + 3 + 8)
    # Default order is sorted by name: b, w, z.
    assert torch.equal(flat[:, :3], masks["b"])
    assert torch.equal(flat[:, 3:15], masks["w"].reshape(2, -1))
    back = M.unflatten_masks(flat, shapes)
    for name in shapes:
        assert torch.equal(back[name], masks[name])
    order = ["z", "w", "b"]
    flat2 = M.flatten_masks(masks, order)
    assert torch.equal(flat2[:, :8], masks["z"].reshape(2, -1))
    assert torch.equal(M.unflatten_masks(flat2, shapes, order)["w"], masks["w"])
    with pytest.raises(ValueError, match="N"):
        M.unflatten_masks(flat[:, :-1], shapes)


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #
def test_harmony_scores_and_inputs_unchanged() -> None:
    g = torch.tensor([[1.0, -2.0, 3.0], [3.0, 2.0, -1.0], [2.0, 0.0, 1.0]])
    original = g.clone()
    h = M.harmony_scores(g)
    mean = torch.tensor([2.0, 0.0, 1.0])
    for t in range(3):
        assert torch.equal(h[t], mean * original[t])
    assert torch.equal(g, original)  # task 0's gradient not corrupted
    # Agreement with the consensus is positive, conflict negative.
    assert h[0, 0] > 0 and h[1, 2] < 0
    with pytest.raises(ValueError):
        M.harmony_scores(torch.zeros(3))


def test_importance_scores() -> None:
    g = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    w = torch.randn(10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(M.importance_scores("fisher", g, w), g * g)
    mag = M.importance_scores("magnitude", g, w)
    assert mag.shape == (3, 10)
    for t in range(3):
        assert torch.equal(mag[t], w.abs())
    mag[0, 0] = 123.0  # a fresh tensor, not a view of the weights
    assert w.abs()[0] != 123.0 and mag[1, 0] != 123.0
    r1 = M.importance_scores("random", g, w, torch.Generator().manual_seed(5))
    r2 = M.importance_scores("random", g, w, torch.Generator().manual_seed(5))
    r3 = M.importance_scores("random", g, w, torch.Generator().manual_seed(6))
    assert r1.shape == (3, 10) and torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert bool((r1 >= 0).all()) and bool((r1 < 1).all())
    with pytest.raises(ValueError, match="Generator"):
        M.importance_scores("random", g, w)
    with pytest.raises(ValueError, match="fisher"):
        M.importance_scores("snip", g, w)
    with pytest.raises(ValueError):
        M.importance_scores("magnitude", g, torch.zeros(9))


# --------------------------------------------------------------------------- #
# Drop and grow
# --------------------------------------------------------------------------- #
def reference_drop_and_grow(
    masks: torch.Tensor, drop: torch.Tensor, grow: torch.Tensor, ks: list[int]
) -> torch.Tensor:
    """Per-task Python loop, the obvious (slow) version."""
    out = masks.clone()
    for t in range(masks.shape[0]):
        active = [i for i in range(masks.shape[1]) if masks[t, i]]
        inactive = [i for i in range(masks.shape[1]) if not masks[t, i]]
        k = min(ks[t], len(active), len(inactive))
        for i in sorted(active, key=lambda i: drop[t, i].item())[:k]:
            out[t, i] = False
        for i in sorted(inactive, key=lambda i: -grow[t, i].item())[:k]:
            out[t, i] = True
    return out


def distinct_scores(t: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g).float() for _ in range(t)])


def test_drop_and_grow_matches_reference_and_preserves_density() -> None:
    masks = torch.rand(3, 60, generator=torch.Generator().manual_seed(0)) < 0.5
    drop, grow = distinct_scores(3, 60, 1), distinct_scores(3, 60, 2)
    inputs = (masks.clone(), drop.clone(), grow.clone())
    new = M.drop_and_grow(masks, drop, grow, 5)
    assert new.dtype == torch.bool and new.shape == masks.shape
    assert torch.equal(new.sum(dim=1), masks.sum(dim=1))
    assert torch.equal(new, reference_drop_and_grow(masks, drop, grow, [5, 5, 5]))
    assert int((masks & ~new).sum()) == 15 and int((~masks & new).sum()) == 15
    for a, b in zip(inputs, (masks, drop, grow), strict=True):
        assert torch.equal(a, b)


def test_drop_and_grow_per_task_k_tensor() -> None:
    masks = torch.rand(3, 40, generator=torch.Generator().manual_seed(3)) < 0.6
    drop, grow = distinct_scores(3, 40, 4), distinct_scores(3, 40, 5)
    new = M.drop_and_grow(masks, drop, grow, torch.tensor([0, 3, 7]))
    assert torch.equal(new, reference_drop_and_grow(masks, drop, grow, [0, 3, 7]))
    changed = (new != masks).sum(dim=1)
    assert changed.tolist() == [0, 6, 14]


def test_drop_and_grow_never_regrows_dropped() -> None:
    masks = torch.tensor([[True, True, False, False]])
    drop = torch.tensor([[0.0, 5.0, 1.0, 1.0]])
    # Entry 0 is dropped, and has the best grow score: it must stay dropped.
    grow = torch.tensor([[100.0, 100.0, 2.0, 1.0]])
    new = M.drop_and_grow(masks, drop, grow, 1)
    assert new.tolist() == [[False, True, True, False]]


def test_drop_and_grow_clips_k_and_k0_noop() -> None:
    masks = torch.tensor(
        [
            [True, True, False, False, False, False],  # 2 active
            [True, True, True, True, True, False],  # 1 inactive
            [True, True, True, True, True, True],  # full: nothing to swap
        ]
    )
    drop, grow = distinct_scores(3, 6, 0), distinct_scores(3, 6, 1)
    new = M.drop_and_grow(masks, drop, grow, 5)
    assert torch.equal(new.sum(dim=1), masks.sum(dim=1))
    assert (new != masks).sum(dim=1).tolist() == [4, 2, 0]
    assert torch.equal(new, reference_drop_and_grow(masks, drop, grow, [5, 5, 5]))
    same = M.drop_and_grow(masks, drop, grow, 0)
    assert torch.equal(same, masks) and same is not masks
    with pytest.raises(ValueError):
        M.drop_and_grow(masks, drop, grow, -1)


def test_drop_and_grow_infinite_scores_do_not_tie_with_fill() -> None:
    # Real ±inf scores must still rank inside their own set (active entries
    # for dropping, inactive ones for growing), whatever topk does with ties.
    masks = torch.tensor([[True, True, False, False], [False, False, True, True]])
    inf = math.inf
    drop = torch.tensor([[inf, inf, 0.0, 0.0], [0.0, 0.0, inf, inf]])
    grow = torch.tensor([[0.0, 0.0, -inf, -inf], [-inf, -inf, 0.0, 0.0]])
    new = M.drop_and_grow(masks, drop, grow, 2)
    assert new.tolist() == (~masks).tolist()
    with pytest.raises(ValueError, match="NaN"):
        M.drop_and_grow(masks, torch.full((2, 4), math.nan), grow, 1)
    with pytest.raises(ValueError):
        M.drop_and_grow(masks.float(), drop, grow, 1)


# --------------------------------------------------------------------------- #
# Schedule, reporting, packing
# --------------------------------------------------------------------------- #
def test_swap_count_schedule() -> None:
    total, n = 1000, 100
    ks = [M.swap_count("cosine", s, total, 0.29, n) for s in range(total + 1)]
    assert ks[0] == 0 and ks[-1] == 0
    assert ks[total // 2] == 29  # ⌊0.29 · 100⌋ although 0.29 * 100 < 29 in floats
    assert max(ks) == 29
    assert ks == ks[::-1]
    assert all(a <= b for a, b in zip(ks[:500], ks[1:501], strict=True))
    assert M.swap_count("cosine", -5, total, 0.29, n) == 0
    assert M.swap_count("cosine", total + 5, total, 0.29, n) == 0
    assert M.swap_count("cosine", 250, total, 1.0, 1000) == 500  # sin²(π/4) = 1/2
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError):
            M.swap_count("cosine", 1, total, bad, n)
    with pytest.raises(ValueError):
        M.swap_count("cosine", 1, 0, 0.5, n)


def test_swap_count_constant_schedule_and_absolute_peak() -> None:
    assert [M.swap_count("constant", s, 100, 0.29, 100) for s in (0, 50, 100)] == [
        29,
        29,
        29,
    ]
    # k_max > 0 replaces the fraction of the active entries (the release's count)
    assert M.swap_count("cosine", 50, 100, 0.29, 1000, peak=100) == 100
    assert M.swap_count("constant", 3, 100, 0.29, 1000, peak=7) == 7
    with pytest.raises(ValueError, match="change schedule"):
        M.swap_count("linear", 1, 100, 0.5, 10)
    with pytest.raises(ValueError, match="peak"):
        M.swap_count("cosine", 1, 100, 0.5, 10, peak=-1)


def test_mask_drift_counts_dropped_initial_entries() -> None:
    initial = torch.tensor([[True, True, True, True], [False, False, False, False]])
    final = torch.tensor([[True, False, True, True], [True, False, False, False]])
    drift = M.mask_drift(initial, final)
    assert drift.dtype == torch.float64
    assert drift.tolist() == [0.25, 0.0]  # a task with no active entry: 0
    assert M.mask_drift(initial, initial).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="one shape"):
        M.mask_drift(initial, final[:, :2])


def test_mask_overlap_and_density() -> None:
    m = torch.tensor(
        [
            [True, True, False, False],
            [True, False, True, False],
            [False, False, False, False],
            [False, False, False, False],
        ]
    )
    j = M.mask_overlap(m)
    assert j.shape == (4, 4)
    assert torch.equal(j, j.T)
    assert j[0, 1].item() == pytest.approx(1 / 3)
    assert j[0, 2].item() == 0.0
    assert j[2, 3].item() == 1.0
    assert torch.equal(torch.diagonal(j), torch.ones(4, dtype=torch.float64))
    assert M.mask_density(m) == pytest.approx(4 / 16)
    off_diagonal = (j.sum() - j.diagonal().sum()) / 12
    assert M.mean_mask_overlap(m) == pytest.approx(float(off_diagonal))
    assert M.mean_mask_overlap(m[:1]) is None
    assert M.task_densities(m).tolist() == [0.5, 0.5, 0.0, 0.0]
