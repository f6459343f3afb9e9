"""The mask-update options of issue 9, each on tiny data, against its formula.

Accumulated effective-weight gradients, protected 1-D parameters, score
normalisation, the leave-one-out consensus, per-task gradient clipping, the
absolute-count schedule, density, and bit-exact save/load/resume with the
accumulator's state included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory

from harmodt_algo import PRESETS, HarmoDT, HarmoDTConfig
from harmodt_algo import masks as mask_ops
from harmodt_algo.networks import effective_weights

from .test_harmodt import fit, small, synthetic


def _built(**overrides: Any) -> tuple[HarmoDT, Any]:
    data = synthetic(num_tasks=3)
    algo = HarmoDT(small(**overrides))
    algo.build_with_dataset(data)
    return algo, data


# ------------------------------------------------------------ pure formulas


def test_leave_one_out_consensus_matches_its_formula() -> None:
    g = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    h = mask_ops.harmony_scores(g, leave_one_out=True)
    for t in range(4):
        others = torch.cat([g[:t], g[t + 1 :]]).mean(dim=0)
        torch.testing.assert_close(h[t], others * g[t])
    # the release's consensus includes the task itself
    torch.testing.assert_close(mask_ops.harmony_scores(g), g.mean(0) * g)
    # tasks without a gradient are left out of the consensus and score 0
    valid = torch.tensor([True, False, True, True])
    h = mask_ops.harmony_scores(g, leave_one_out=True, valid=valid)
    torch.testing.assert_close(h[0], (g[2] + g[3]) / 2 * g[0])
    assert bool((h[1] == 0).all())


def test_task_gradient_clip_bounds_each_norm() -> None:
    g = torch.randn(3, 40, generator=torch.Generator().manual_seed(1))
    g[1] *= 1e-4  # already small: untouched
    clipped = mask_ops.clip_task_gradients(g, 0.25)
    norms = clipped.norm(dim=1)
    assert torch.allclose(norms[[0, 2]], torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(clipped[1], g[1])
    torch.testing.assert_close(mask_ops.clip_task_gradients(g, 0.0), g)


@pytest.mark.parametrize("kind", ["rank", "scale"])
def test_normalised_scores_are_invariant_to_rescaling_a_term(kind: str) -> None:
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    a = mask_ops.normalize_scores(kind, x)
    b = mask_ops.normalize_scores(kind, 1e5 * x)
    torch.testing.assert_close(a, b)
    # and order-preserving within a task
    assert torch.equal(torch.argsort(a, dim=1), torch.argsort(x, dim=1))
    # so γ changes the drop set for magnitude importance once normalised
    with pytest.raises(ValueError, match="valid kinds"):
        mask_ops.normalize_scores("zscore", x)


def test_protected_entries_are_never_dropped() -> None:
    masks = torch.ones(2, 10, dtype=torch.bool)
    masks[:, 8:] = False
    protected = torch.zeros(10, dtype=torch.bool)
    protected[:4] = True
    drop = torch.arange(10.0).expand(2, 10).clone()  # lowest = protected ones
    new = mask_ops.drop_and_grow(masks, drop, torch.zeros(2, 10), 2, protected)
    assert bool(new[:, :4].all())  # protected kept
    assert not bool(new[:, 4:6].any())  # the next-lowest droppable went
    assert torch.equal(new.sum(1), masks.sum(1))
    # k is clipped to the droppable active entries
    new = mask_ops.drop_and_grow(masks, drop, torch.zeros(2, 10), 9, protected)
    assert bool(new[:, :4].all()) and torch.equal(new.sum(1), masks.sum(1))


# ------------------------------------------------------ through the algorithm


def _rows(batch: Any, rows: np.ndarray) -> Any:
    """The numpy mini-batch restricted to some sequences."""
    import dataclasses

    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name)[rows]
            for f in dataclasses.fields(batch)
            if f.name != "length"
        },
    )


def test_accumulated_gradient_is_the_mean_of_the_step_gradients() -> None:
    no_dropout = dict(attn_dropout=0.0, resid_dropout=0.0, embed_dropout=0.0)
    algo, data = _built(
        harmony_estimator="accumulated", mask_interval=0, batch_size=6, **no_dropout
    )
    impl = algo.impl
    assert impl is not None and impl._modules.masks.accumulates
    names = impl.masked_names
    expected = torch.zeros_like(impl._modules.masks.grad_sum)  # (T, N)
    counts = torch.zeros(3)
    rng = np.random.default_rng(0)
    for step in range(5):
        # one task per step (round robin) and mixed batches of several tasks
        ids = np.full(6, step % 3) if step % 2 == 0 else np.array([0, 0, 1, 1, 2, 2])
        batch = data.sample_batch(ids, 5, rng)
        for t in np.unique(ids).tolist():
            # explicit: gradient of task t's own mean loss w.r.t. θ ⊙ M_t
            sub = algo._to_torch(_rows(batch, np.flatnonzero(ids == t)))
            n = int((ids == t).sum())
            weights = effective_weights(
                impl._masked, impl._modules.masks, torch.full((n,), t)
            )
            loss = impl.sequence_losses(sub, weights).mean()
            grads = torch.autograd.grad(loss, [weights.tensors[n] for n in names])
            expected[t] += torch.cat([g.reshape(-1) for g in grads])
            counts[t] += 1
        algo.update(batch, ids)  # the training step accumulates from its backward
    mean, valid = impl._modules.masks.mean_gradients()
    assert bool(valid.all())
    assert impl._modules.masks.grad_count.tolist() == counts.long().tolist()
    torch.testing.assert_close(
        mean, expected / counts.unsqueeze(1), rtol=1e-4, atol=1e-6
    )


def test_accumulated_estimator_updates_masks_and_resets() -> None:
    algo, data = _built(
        harmony_estimator="accumulated", mask_interval=6, change_schedule="constant"
    )
    impl = algo.impl
    assert impl is not None
    before = impl.flat_masks().clone()
    fit(algo, data, n_steps=6)
    after = impl.flat_masks()
    assert bool((before != after).any())
    torch.testing.assert_close(after.sum(1), before.sum(1))  # density preserved exactly
    # the accumulator was consumed by the update at step 6
    assert int(impl._modules.masks.grad_count.sum()) == 0
    assert int(impl._modules.masks.changed.sum()) > 0
    assert float(impl.mask_turnover().mean()) > 0


def test_fit_never_drops_protected_parameters() -> None:
    algo, data = _built(mask_init="uniform", change_fraction=0.5, mask_interval=2)
    impl = algo.impl
    assert impl is not None
    one_dim = impl._one_dim  # (N,)
    before = impl.flat_masks().clone()
    fit(algo, data, n_steps=8)
    after = impl.flat_masks()
    assert bool((before != after).any())
    # an active 1-D entry is never turned off (it may be grown)
    assert not bool((before & ~after)[:, one_dim].any())
    # without protection the same run drops some of them
    algo2, _ = _built(
        mask_init="uniform", change_fraction=0.5, mask_interval=2, protect_1d=False
    )
    assert algo2.impl is not None
    fit(algo2, data, n_steps=8)
    assert bool((before & ~algo2.impl.flat_masks())[:, one_dim].any())


def test_absolute_count_changes_exactly_the_scheduled_entries_per_task() -> None:
    algo, data = _built(change_count=7, change_schedule="constant", mask_interval=3)
    impl = algo.impl
    assert impl is not None
    before = impl.flat_masks().clone()
    fit(algo, data, n_steps=3)  # one update
    after = impl.flat_masks()
    assert (before & ~after).sum(1).tolist() == [7, 7, 7]
    assert torch.equal(after.sum(1), before.sum(1))
    assert impl._modules.masks.changed.tolist() == [7, 7, 7]
    # cosine: ⌊k·sin²(π s/S)⌋ at s = S/2 is k, at the ends 0
    algo.config.change_schedule = "cosine"
    impl._modules.masks.schedule_horizon.fill_(100)
    assert algo.swap_counts(50).tolist() == [7, 7, 7]
    assert algo.swap_counts(100).tolist() == [0, 0, 0]
    assert algo.swap_counts(25).tolist() == [3, 3, 3]  # ⌊7 · 0.5⌋


def test_batch_estimator_without_dropout_is_deterministic() -> None:
    algo, data = _built(harmony_dropout=False, mask_batch_size=4)
    impl = algo.impl
    assert impl is not None
    rng = np.random.default_rng(0)
    batches = [
        algo._to_torch(data.sample_batch(np.full(4, t), 5, rng)) for t in range(3)
    ]
    torch.manual_seed(0)
    a = impl.task_gradients(batches)
    torch.manual_seed(1)
    b = impl.task_gradients(batches)
    assert torch.equal(a, b)
    assert impl._modules.transformer.training  # train mode restored
    algo2, _ = _built(harmony_dropout=True, mask_batch_size=4)
    assert algo2.impl is not None
    algo2.impl._modules.transformer.load_state_dict(
        impl._modules.transformer.state_dict()
    )
    torch.manual_seed(0)
    c = algo2.impl.task_gradients(batches)
    torch.manual_seed(1)
    d = algo2.impl.task_gradients(batches)
    assert not torch.equal(c, d)


def test_resume_with_accumulator_is_bit_exact(tmp_path: Path) -> None:
    cfg = dict(
        harmony_estimator="accumulated",
        mask_interval=6,
        change_count=5,
        change_schedule="constant",  # the horizon differs between the two fits
    )
    data = synthetic(num_tasks=3)
    straight = HarmoDT(small(**cfg))
    fit(straight, data, n_steps=16)

    first = HarmoDT(small(**cfg))
    fit(first, data, n_steps=8)  # an update at 6, accumulator non-empty at 8
    assert first.impl is not None
    assert int(first.impl._modules.masks.grad_count.sum()) == 2
    path = tmp_path / "model.d3"
    first.save(str(path))
    import d3rlpy

    resumed = d3rlpy.load_learnable(str(path))
    assert isinstance(resumed, HarmoDT) and resumed.impl is not None
    assert torch.equal(
        resumed.impl._modules.masks.grad_sum, first.impl._modules.masks.grad_sum
    )
    fit(resumed, data, n_steps=8)
    assert straight.impl is not None
    assert torch.equal(resumed.impl.flat_masks(), straight.impl.flat_masks())
    for (n, p), q in zip(
        straight.impl._modules.transformer.state_dict().items(),
        resumed.impl._modules.transformer.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(p, q), n


def test_presets_and_bad_values() -> None:
    assert HarmoDTConfig.from_preset("sparse-static").mask_interval == 0
    assert HarmoDTConfig.from_preset("sparse-static").mask_init == "erk"
    plus = HarmoDTConfig.from_preset("harmodt-plus")
    assert plus.harmony_estimator == "accumulated" and plus.harmony_leave_one_out
    assert HarmoDTConfig.from_preset("harmodt-f-v0").protect_1d is False
    assert HarmoDTConfig.from_preset("harmodt-f-release").change_count == 100
    assert set(PRESETS) >= {"sparse-static", "harmodt-plus", "harmodt-f-release"}
    for bad, match in (
        ({"harmony_estimator": "ema"}, "harmony_estimator"),
        ({"score_normalization": "z"}, "score_normalization"),
        ({"change_count": -1}, "change_count"),
        ({"harmony_grad_clip": float("nan")}, "harmony_grad_clip"),
        ({"accumulator_dtype": "float8"}, "accumulator_dtype"),
    ):
        with pytest.raises(ValueError, match=match):
            HarmoDTConfig(**bad).validate()


def test_old_models_without_accumulator_state_still_load() -> None:
    algo, _ = _built()
    assert algo.impl is not None
    masks = algo.impl._modules.masks
    state = {
        k: v
        for k, v in masks.state_dict().items()
        if k not in ("changed", "grad_sum", "grad_count")
    }
    masks.changed.fill_(3)
    masks.load_state_dict(state)
    assert masks.changed.tolist() == [0, 0, 0]


def test_noop_logger_fit_reports_turnover_in_metrics() -> None:
    algo, data = _built(change_count=4, change_schedule="constant", mask_interval=2)
    seen: list[dict[str, float]] = []
    algo.fit(
        data,
        n_steps=4,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
        callback=lambda a, e, s: seen.append({}),
    )
    assert algo.impl is not None
    assert algo.impl._modules.masks.changed.tolist() == [8, 8, 8]
