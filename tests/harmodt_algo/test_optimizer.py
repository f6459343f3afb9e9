"""Tests for harmodt_algo.optimizer: the update mask really freezes entries."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import harmodt_algo  # noqa: F401  (silences gym before d3rlpy)

# isort: split
from d3rlpy.algos import DecisionTransformerConfig
from d3rlpy.optimizers import (
    AdamWFactory,
    GPTAdamWFactory,
    OptimizerFactory,
    make_optimizer_field,
)
from d3rlpy.optimizers.lr_schedulers import WarmupSchedulerFactory
from d3rlpy.serializable_config import SerializableConfig

from harmodt_algo import optimizer as O

LR = 1e-2


class Net(nn.Module):
    """Linear -> LayerNorm -> Linear, with typed attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 4)


def make_model(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def random_masks(
    model: nn.Module, density: float, seed: int
) -> dict[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.rand(p.shape, generator=g) < density for p in model.parameters()}


def set_grads(model: nn.Module, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=g) for p in model.parameters()]
    for p, grad in zip(model.parameters(), grads, strict=True):
        p.grad = grad.clone()
    return grads


def state_tensors(
    optim: torch.optim.Optimizer, p: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in optim.state[p].items()
        if isinstance(v, torch.Tensor) and v.shape == p.shape
    }


@pytest.mark.parametrize("amsgrad", [False, True])
def test_masked_entries_are_frozen_bit_for_bit(amsgrad: bool) -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory(weight_decay=0.1, amsgrad=amsgrad).create(
        model.named_modules(), lr=LR, compiled=False
    )
    assert isinstance(opt, O.MaskedOptimizerWrapper)
    set_grads(model, 100)  # one unmasked step so the moments are non-zero
    opt.step()
    masks = random_masks(model, 0.5, seed=1)
    before = {p: p.detach().clone() for p in model.parameters()}
    state_before = {p: state_tensors(opt.optim, p) for p in model.parameters()}
    expected_keys = {"exp_avg", "exp_avg_sq"} | (
        {"max_exp_avg_sq"} if amsgrad else set()
    )
    for step in range(5):
        set_grads(model, step)
        opt.set_trainable_entries(masks)
        opt.step()
    for p in model.parameters():
        frozen = ~masks[p]
        assert torch.equal(p.detach()[frozen], before[p][frozen])
        assert bool((p.detach()[masks[p]] != before[p][masks[p]]).all())
        state_now = state_tensors(opt.optim, p)
        assert set(state_now) == expected_keys
        for key, value in state_now.items():
            assert torch.equal(value[frozen], state_before[p][key][frozen]), key
            assert not torch.equal(value[masks[p]], state_before[p][key][masks[p]])


def test_plain_adamw_with_zeroed_grads_moves_entries() -> None:
    """The trap the wrapper exists for: without it the same check fails."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    set_grads(model, 100)
    opt.step()
    masks = random_masks(model, 0.5, seed=1)
    before = {p: p.detach().clone() for p in model.parameters()}
    for step in range(5):
        set_grads(model, step)
        for p in model.parameters():
            assert p.grad is not None
            p.grad[~masks[p]] = 0.0
        opt.step()
    for p in model.parameters():
        frozen = ~masks[p]
        assert not torch.equal(p.detach()[frozen], before[p][frozen])


def test_first_step_creates_zero_state_at_frozen_entries() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory(weight_decay=0.1).create(
        model.named_modules(), lr=LR, compiled=False
    )
    masks = random_masks(model, 0.5, seed=2)
    before = {p: p.detach().clone() for p in model.parameters()}
    set_grads(model, 0)
    opt.set_trainable_entries(masks)
    opt.step()
    for p in model.parameters():
        frozen = ~masks[p]
        assert torch.equal(p.detach()[frozen], before[p][frozen])
        for value in state_tensors(opt.optim, p).values():
            assert bool((value[frozen] == 0).all())
            assert bool((value[masks[p]] != 0).all())


def test_unmasked_parameters_match_reference_adamw() -> None:
    model = make_model()
    ref = copy.deepcopy(model)
    opt = O.MaskedAdamWFactory(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6).create(
        model.named_modules(), lr=LR, compiled=False
    )
    # Reference: d3rlpy's GPTAdamW with the same hyperparameters and groups.
    ref_opt = GPTAdamWFactory(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6).create(
        ref.named_modules(), lr=LR, compiled=False
    )
    first_weight = model.fc1.weight
    all_true = {model.fc2.weight: torch.ones_like(model.fc2.weight, dtype=torch.bool)}
    partial = {first_weight: random_masks(model, 0.5, seed=3)[first_weight]}
    for step in range(6):
        grads = set_grads(model, step)
        for p, grad in zip(ref.parameters(), grads, strict=True):
            p.grad = grad.clone()
        opt.set_trainable_entries({**partial, **all_true})
        opt.step()
        ref_opt.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        if p is first_weight:
            assert not torch.equal(p, q)
        else:
            assert torch.equal(p, q), name


def test_mask_is_cleared_after_step() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory().create(model.named_modules(), lr=LR, compiled=False)
    weight = model.fc1.weight
    mask = torch.zeros_like(weight, dtype=torch.bool)
    set_grads(model, 0)
    opt.set_trainable_entries({weight: mask})
    assert opt.trainable_entries is not None
    before = weight.detach().clone()
    opt.step()
    assert opt.trainable_entries is None
    assert torch.equal(weight, before)
    set_grads(model, 1)
    opt.step()  # no mask set: the weight moves everywhere
    assert bool((weight.detach() != before).all())
    opt.set_trainable_entries({weight: mask})
    opt.set_trainable_entries(None)
    assert opt.trainable_entries is None
    with pytest.warns(DeprecationWarning, match="set_trainable_entries"):
        opt.set_update_mask({weight: mask})  # the old name still works
    assert opt.trainable_entries is not None


def test_masked_parameter_without_grad() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory(weight_decay=0.1).create(
        model.named_modules(), lr=LR, compiled=False
    )
    set_grads(model, 0)
    weight, other = model.fc1.weight, model.fc2.weight
    weight.grad = None
    before, other_before = weight.detach().clone(), other.detach().clone()
    masks = random_masks(model, 0.5, seed=4)
    opt.set_trainable_entries(masks)
    opt.step()
    assert torch.equal(weight, before)
    assert len(opt.optim.state[weight]) == 0
    active = masks[other]
    assert bool((other.detach()[active] != other_before[active]).all())
    assert torch.equal(other.detach()[~active], other_before[~active])


def test_clip_grad_norm_applied() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory(clip_grad_norm=0.5).create(
        model.named_modules(), lr=LR, compiled=False
    )
    grads = set_grads(model, 0)
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])) > 1.0
    opt.set_trainable_entries(random_masks(model, 0.5, seed=0))
    opt.step()
    clipped = torch.cat(
        [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    )
    assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(0.5, rel=1e-5)


def test_warmup_scheduler_steps() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory(
        lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=4)
    ).create(model.named_modules(), lr=LR, compiled=False)
    lrs = []
    for step in range(6):
        lrs.append(opt.optim.param_groups[0]["lr"])
        set_grads(model, step)
        opt.step()
    assert lrs == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR, LR, LR])


def test_state_dict_round_trip_gives_identical_next_step() -> None:
    factory = O.MaskedAdamWFactory(
        weight_decay=0.1,
        clip_grad_norm=1.0,
        lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=10),
    )
    model = make_model()
    opt = factory.create(model.named_modules(), lr=LR, compiled=False)
    for step in range(3):
        set_grads(model, step)
        opt.set_trainable_entries(random_masks(model, 0.7, seed=step))
        opt.step()
    clone = copy.deepcopy(model)
    clone_opt = factory.create(clone.named_modules(), lr=LR, compiled=False)
    clone_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert clone_opt.optim.param_groups[0]["lr"] == opt.optim.param_groups[0]["lr"]
    for m, o in ((model, opt), (clone, clone_opt)):
        set_grads(m, 42)
        o.set_trainable_entries(random_masks(m, 0.5, seed=42))
        o.step()
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
        for key, value in state_tensors(opt.optim, p).items():
            assert torch.equal(value, clone_opt.optim.state[q][key])


def test_set_trainable_entries_validation() -> None:
    model = make_model()
    opt = O.MaskedAdamWFactory().create(model.named_modules(), lr=LR, compiled=False)
    weight = model.fc1.weight
    with pytest.raises(ValueError, match="bool"):
        opt.set_trainable_entries({weight: torch.ones_like(weight)})
    with pytest.raises(ValueError, match="shape"):
        opt.set_trainable_entries({weight: torch.ones(3, dtype=torch.bool)})
    stranger = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="not optimised"):
        opt.set_trainable_entries({stranger: torch.ones(2, dtype=torch.bool)})


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.custom = nn.Parameter(torch.zeros(4, 4))  # not in a Linear
        self.head = nn.Linear(4, 3, bias=False)


def group_ids(optim: torch.optim.Optimizer) -> list[tuple[float, set[int]]]:
    return [
        (group["weight_decay"], {id(p) for p in group["params"]})
        for group in optim.param_groups
    ]


def test_weight_decay_grouping_matches_gpt_adamw() -> None:
    model = Tiny()
    opt = O.MaskedAdamWFactory(weight_decay=0.3).create(
        model.named_modules(), lr=LR, compiled=False
    )
    groups = group_ids(opt.optim)
    assert groups[0] == (0.3, {id(model.fc.weight), id(model.head.weight)})
    assert groups[1] == (
        0.0,
        {
            id(p)
            for p in (
                model.embed.weight,
                model.fc.bias,
                model.ln.weight,
                model.ln.bias,
                model.custom,
            )
        },
    )
    ref = GPTAdamWFactory(weight_decay=0.3).create_optimizer(
        model.named_modules(), lr=LR
    )
    assert groups == group_ids(ref)
    decay, no_decay = O.split_weight_decay(model.named_modules(), rule="ndim")
    assert {id(p) for p in decay} == {
        id(model.fc.weight),
        id(model.head.weight),
        id(model.custom),
    }
    assert id(model.embed.weight) in {id(p) for p in no_decay}
    with pytest.raises(ValueError, match="gpt"):
        O.split_weight_decay(model.named_modules(), rule="l2")


def test_tied_parameter_appears_once_without_decay() -> None:
    model = Tiny()
    model.head = nn.Linear(4, 5, bias=False)
    model.head.weight = model.embed.weight  # GPT-style weight tying
    decay, no_decay = O.split_weight_decay(model.named_modules())
    ids = [id(p) for p in decay + no_decay]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert id(model.embed.weight) in {id(p) for p in no_decay}


@dataclasses.dataclass()
class _Config(SerializableConfig):
    optim_factory: OptimizerFactory = make_optimizer_field()


def test_config_serialisation_round_trip() -> None:
    factory = O.MaskedAdamWFactory(
        weight_decay=1e-4,
        clip_grad_norm=0.25,
        lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=100),
        betas=(0.8, 0.95),
    )
    config = _Config(optim_factory=factory)
    as_dict = config.serialize_to_dict()
    assert as_dict["optim_factory"]["type"] == "masked_adamw"
    for restored in (
        _Config.deserialize(config.serialize()),
        _Config.deserialize_from_dict(as_dict),
    ):
        assert isinstance(restored.optim_factory, O.MaskedAdamWFactory)
        assert restored == config
        assert restored.optim_factory.betas == (0.8, 0.95)
        lr_factory = restored.optim_factory.lr_scheduler_factory
        assert isinstance(lr_factory, WarmupSchedulerFactory)
        assert lr_factory.warmup_steps == 100

    wrapped = _Config(
        optim_factory=O.MaskedOptimizerFactory(
            optim_factory=AdamWFactory(weight_decay=0.2), clip_grad_norm=1.0
        )
    )
    assert _Config.deserialize(wrapped.serialize()) == wrapped


def test_inside_d3rlpy_decision_transformer() -> None:
    factory = O.MaskedAdamWFactory(clip_grad_norm=0.25)
    config = DecisionTransformerConfig(optim_factory=factory, num_layers=1)
    restored = DecisionTransformerConfig.deserialize(config.serialize())
    assert restored.optim_factory == factory
    algo = config.create(device="cpu:0")
    algo.create_impl((3,), 2)
    impl = algo.impl
    assert impl is not None
    optim = impl.modules.optim  # type: ignore[attr-defined]
    assert isinstance(optim, O.MaskedOptimizerWrapper)
    transformer = impl.modules.transformer  # type: ignore[attr-defined]
    ref = GPTAdamWFactory().create_optimizer(transformer.named_modules(), lr=1e-4)
    assert [ids for _, ids in group_ids(optim.optim)] == [
        ids for _, ids in group_ids(ref)
    ]


def test_generic_masked_factory_freezes_and_rejects_conflicts() -> None:
    model = make_model()
    opt = O.MaskedOptimizerFactory(
        optim_factory=AdamWFactory(weight_decay=0.1, clip_grad_norm=0.5)
    ).create(model.named_modules(), lr=LR, compiled=False)
    assert isinstance(opt.optim, torch.optim.AdamW)
    masks = random_masks(model, 0.5, seed=5)
    before = {p: p.detach().clone() for p in model.parameters()}
    for step in range(3):
        set_grads(model, step)
        opt.set_trainable_entries(masks)
        opt.step()
    for p in model.parameters():
        assert torch.equal(p.detach()[~masks[p]], before[p][~masks[p]])
        assert not torch.equal(p.detach()[masks[p]], before[p][masks[p]])
    conflict = O.MaskedOptimizerFactory(
        optim_factory=AdamWFactory(clip_grad_norm=0.5), clip_grad_norm=1.0
    )
    with pytest.raises(ValueError, match="clip_grad_norm"):
        conflict.create(model.named_modules(), lr=LR, compiled=False)


def test_registration_is_idempotent_and_guarded() -> None:
    O._register(O.MaskedAdamWFactory)  # same class again: no assertion

    @dataclasses.dataclass()
    class Impostor(OptimizerFactory):
        @staticmethod
        def get_type() -> str:
            return "masked_adamw"

    with pytest.raises(RuntimeError, match="already registered"):
        O._register(Impostor)
