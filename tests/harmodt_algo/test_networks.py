"""The masked network: mixed batches, mask semantics, padding, buffers."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from harmodt_algo.networks import (
    MaskedDecisionTransformer,
    PromptBank,
    TaskMasks,
    effective_weights,
)

T, B, L, OBS, ACT = 3, 6, 8, 39, 4


def build(
    prompt_length: int = 3,
) -> tuple[MaskedDecisionTransformer, TaskMasks, PromptBank]:
    torch.manual_seed(0)
    net = MaskedDecisionTransformer(
        observation_size=OBS,
        action_size=ACT,
        embed_size=32,
        num_layers=2,
        num_heads=2,
        ff_size=64,
        context_size=L,
        max_timestep=100,
        prompt_length=prompt_length,
        attn_dropout=0.0,
        resid_dropout=0.0,
        embed_dropout=0.0,
        activation_type="relu",
    ).eval()
    params = net.masked_parameters()
    masks = TaskMasks({n: tuple(p.shape) for n, p in params.items()}, T)
    g = torch.Generator().manual_seed(1)
    masks.assign(
        {n: torch.rand((T, *p.shape), generator=g) < 0.7 for n, p in params.items()}
    )
    prompts = PromptBank(T, prompt_length, OBS, ACT)
    prompts.assign(
        {
            "observations": torch.randn(T, prompt_length, OBS),
            "actions": torch.randn(T, prompt_length, ACT),
            "returns_to_go": torch.randn(T, prompt_length, 1),
            "timesteps": torch.arange(prompt_length).repeat(T, 1),
            "masks": torch.ones(T, prompt_length),
        }
    )
    return net, masks, prompts


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "observations": torch.randn(B, L, OBS, generator=g),
        "actions": torch.randn(B, L, ACT, generator=g),
        "returns_to_go": torch.randn(B, L, 1, generator=g),
        "timesteps": torch.arange(1, L + 1).repeat(B, 1),
        "masks": torch.ones(B, L),
    }


def run(net, masks, prompts, x, task_ids):  # type: ignore[no-untyped-def]
    w = effective_weights(net.masked_parameters(), masks, task_ids)
    return net(**x, weights=w, prompts=prompts)


def naive_prepended(net, masks, prompts, x, task_ids):  # type: ignore[no-untyped-def]
    """Reference: prepend each sequence's prompt and run one causal stream."""
    import torch.nn.functional as F

    outs = []
    for b in range(x["masks"].shape[0]):
        t = int(task_ids[b])
        w = {n: p * masks.get(n)[t] for n, p in net.masked_parameters().items()}
        seq, seq_m = net._embed(
            net.embed_timestep,
            net.embed_return,
            net.embed_state,
            net.embed_action,
            *(
                x[k][b : b + 1]
                for k in (
                    "observations",
                    "actions",
                    "returns_to_go",
                    "timesteps",
                    "masks",
                )
            ),
        )
        pr, pr_m = net._embed(
            net.prompt_embed_timestep,
            net.prompt_embed_return,
            net.prompt_embed_state,
            net.prompt_embed_action,
            prompts.observations[t : t + 1],
            prompts.actions[t : t + 1],
            prompts.returns_to_go[t : t + 1],
            prompts.timesteps[t : t + 1],
            prompts.masks[t : t + 1],
        )
        h = net.embed_ln(torch.cat([pr, seq], dim=1))
        km = torch.cat([pr_m, seq_m], dim=1)
        s = h.shape[1]
        allowed = torch.ones(s, s, dtype=torch.bool).tril() & (km > 0)
        bias = torch.zeros(s, s).masked_fill(~allowed, -10000.0)
        for i in range(len(net.blocks)):
            pre = f"blocks.{i}."
            a = F.layer_norm(
                h, (32,), w[pre + "ln1.weight"], w[pre + "ln1.bias"], 0.003
            )
            q, k, v = (
                F.linear(a, w[pre + "qkv.weight"], w[pre + "qkv.bias"])
                .view(1, s, 3, 2, 16)
                .permute(2, 0, 3, 1, 4)
            )
            att = torch.softmax(q @ k.transpose(-1, -2) / 4.0 + bias, dim=-1) @ v
            att = att.transpose(1, 2).reshape(1, s, 32)
            h = h + F.linear(att, w[pre + "proj.weight"], w[pre + "proj.bias"])
            a = F.layer_norm(
                h, (32,), w[pre + "ln2.weight"], w[pre + "ln2.bias"], 0.003
            )
            a = torch.relu(F.linear(a, w[pre + "fc1.weight"], w[pre + "fc1.bias"]))
            h = h + F.linear(a, w[pre + "fc2.weight"], w[pre + "fc2.bias"])
        h = net.final_ln(h)[:, pr.shape[1] :]
        outs.append(torch.tanh(net.predict_action(h[:, 1::3])))
    return torch.cat(outs)


def test_prompt_stream_equals_prepending_the_prompt() -> None:
    net, masks, prompts = build()
    x = inputs()
    x["masks"][0, :2] = 0.0  # left padding in one sequence
    prompts.masks[1, 0] = 0.0  # and in one task's prompt
    for ids in (torch.zeros(B, dtype=torch.long), torch.tensor([0, 1, 2, 2, 1, 0])):
        with torch.no_grad():
            fast = run(net, masks, prompts, x, ids)
            slow = naive_prepended(net, masks, prompts, x, ids)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_mixed_batch_equals_per_task_passes() -> None:
    net, masks, prompts = build()
    x = inputs()
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    mixed = run(net, masks, prompts, x, ids)  # (B, L, A)
    assert mixed.shape == (B, L, ACT)
    for b in range(B):
        one = run(
            net, masks, prompts, {k: v[b : b + 1] for k, v in x.items()}, ids[b : b + 1]
        )
        torch.testing.assert_close(one[0], mixed[b], atol=1e-5, rtol=1e-5)


def test_task_rows_path_has_the_per_sequence_gradients() -> None:
    """A mixed batch in unequal task groups runs each linear layer once per
    task on its rows; its gradient equals the sum of one-sequence passes."""
    net, masks, prompts = build()
    net.eval()  # no dropout: the passes must see the same network
    x = inputs()
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    run(net, masks, prompts, x, ids).square().sum().backward()
    mixed = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    for b in range(B):
        one = {k: v[b : b + 1] for k, v in x.items()}
        run(net, masks, prompts, one, ids[b : b + 1]).square().sum().backward()
    for name, grad in mixed.items():
        torch.testing.assert_close(grad, dict(net.named_parameters())[name].grad,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip


def test_inactive_weights_do_not_affect_a_task() -> None:
    net, masks, prompts = build()
    x = inputs()
    ids = torch.zeros(B, dtype=torch.long)
    before = run(net, masks, prompts, x, ids)
    with torch.no_grad():
        for name, p in net.masked_parameters().items():
            p.add_(torch.randn_like(p) * (~masks.get(name)[0]))  # only M_0-inactive
    torch.testing.assert_close(run(net, masks, prompts, x, ids), before)
    other = run(net, masks, prompts, x, torch.ones(B, dtype=torch.long))
    assert not torch.allclose(other, before)


def test_left_padding_does_not_change_real_steps() -> None:
    net, masks, prompts = build()
    x = inputs()
    ids = torch.zeros(B, dtype=torch.long)
    padded = {k: v.clone() for k, v in x.items()}
    padded["masks"][:, :3] = 0.0
    padded["observations"][:, :3] = 123.0  # garbage in padding
    a = run(net, masks, prompts, padded, ids)
    padded["observations"][:, :3] = -55.0
    b = run(net, masks, prompts, padded, ids)
    torch.testing.assert_close(a[:, 3:], b[:, 3:])


def test_prompt_changes_prediction_and_no_prompt_works() -> None:
    net, masks, prompts = build()
    x = inputs()
    ids = torch.zeros(B, dtype=torch.long)
    a = run(net, masks, prompts, x, ids)
    prompts.observations.add_(1.0)
    assert not torch.allclose(a, run(net, masks, prompts, x, ids))
    plain, plain_masks, _ = build(prompt_length=0)
    out = run(plain, plain_masks, None, x, ids)
    assert out.shape == (B, L, ACT) and torch.isfinite(out).all()


def test_task_masks_are_bool_buffers_and_validate_shapes() -> None:
    _, masks, _ = build()
    state = masks.state_dict()
    mask_tensors = [
        v
        for k, v in state.items()
        if k not in ("step", "schedule_horizon", "changed", "grad_sum", "grad_count")
    ]
    assert mask_tensors and all(v.dtype == torch.bool for v in mask_tensors)
    assert all(v.shape[0] == T for v in mask_tensors)
    name = masks.names[0]
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        masks.assign({n: torch.ones(1, 1, dtype=torch.bool) for n in masks.names})
    assert masks.union(torch.tensor([0, 1]))[name].dtype == torch.bool


def test_bad_architecture_is_named() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MaskedDecisionTransformer(OBS, ACT, 30, 1, 4, 64, L, 100, 0, 0, 0, 0, "relu")
    with pytest.raises(ValueError, match="activation"):
        MaskedDecisionTransformer(OBS, ACT, 32, 1, 2, 64, L, 100, 0, 0, 0, 0, "nope")


def test_grouped_layout_matches_gathered_layout() -> None:
    net, masks, prompts = build()
    x = inputs()
    sorted_ids = torch.tensor([0, 0, 1, 1, 2, 2])  # equal, contiguous groups
    w = effective_weights(net.masked_parameters(), masks, sorted_ids)
    assert w.grouped and not w.shared
    with torch.no_grad():
        fast = net(**x, weights=w, prompts=prompts)
        gathered = dataclasses.replace(w, grouped=False)
        slow = net(**x, weights=gathered, prompts=prompts)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    unequal = effective_weights(
        net.masked_parameters(), masks, torch.tensor([0, 0, 0, 1, 1, 2])
    )
    unsorted = effective_weights(
        net.masked_parameters(), masks, torch.tensor([0, 1, 0, 1, 2, 2])
    )
    assert not unequal.grouped and not unsorted.grouped


@pytest.mark.parametrize(
    "ids", [[1, 1, 1, 1], [0, 0, 2, 2], [2, 0, 1, 0], [0, 0, 0, 1]]
)
def test_host_task_layout_equals_the_device_one(ids: list[int]) -> None:
    from harmodt_algo.networks import TaskLayout

    _, masks, _ = build()
    params = {n: torch.randn(masks.get(n).shape[1:]) for n in masks.names}
    task_ids = torch.tensor(ids)
    layout = TaskLayout.from_ids(ids, "cpu")
    unique, inverse = torch.unique(task_ids, return_inverse=True)
    assert torch.equal(layout.unique, unique) and torch.equal(layout.inverse, inverse)
    assert layout.grouped == (ids in ([0, 0, 2, 2], [1, 1, 1, 1]))
    a = effective_weights(params, masks, task_ids)
    b = effective_weights(params, masks, task_ids, layout)
    assert (a.shared, a.grouped) == (b.shared, b.grouped)
    for name in masks.names:
        assert torch.equal(a.tensors[name], b.tensors[name])


def test_sorted_unequal_groups_take_slices_with_the_same_values_and_gradients() -> None:
    """The mixed sampler's order (sorted by task, unequal groups) runs each
    task's rows as a slice; the result and the gradients are bit-equal to the
    gather path that any order takes."""
    net, masks, prompts = build()
    net.eval()
    x = inputs()
    ids = torch.tensor([0, 0, 0, 1, 2, 2])
    fast = effective_weights(net.masked_parameters(), masks, ids)
    assert fast.counts == (3, 1, 2) and fast.by_task_rows
    assert (
        effective_weights(
            net.masked_parameters(), masks, ids[[1, 3, 0, 2, 4, 5]]
        ).counts
        is None
    )

    def outputs_and_grads(
        weights_of: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net.zero_grad()
        out = net(**x, weights=weights_of(), prompts=prompts)
        out.square().sum().backward()
        grads = {
            n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None
        }
        return out.detach(), grads

    def sliced() -> Any:
        return effective_weights(net.masked_parameters(), masks, ids)

    def gathered() -> Any:
        return dataclasses.replace(sliced(), counts=None)

    a_out, a_grads = outputs_and_grads(sliced)
    b_out, b_grads = outputs_and_grads(gathered)
    assert torch.equal(a_out, b_out)
    assert a_grads.keys() == b_grads.keys()
    for name in a_grads:
        assert torch.equal(a_grads[name], b_grads[name]), name
