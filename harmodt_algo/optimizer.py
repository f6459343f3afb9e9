"""A mask-aware optimizer for HarmoDT, registered with d3rlpy.

Why this exists: in HarmoDT task ``t`` trains only its sub-network
``θ ⊙ M_t`` (design §5). Zeroing the gradient of inactive entries does *not*
freeze them under Adam/AdamW: the moments still carry old gradients and the
decoupled weight decay shrinks every entry. So the optimizer must mask the
*update*: :class:`MaskedOptimizerWrapper` snapshots the masked parameters and
their per-entry optimizer state before ``step()`` and restores the frozen
entries bit-for-bit afterwards (the release does the same for parameters only).

:class:`MaskedAdamWFactory` builds it around ``torch.optim.AdamW`` with the
GPT-style weight-decay split of d3rlpy's ``GPTAdamWFactory``;
:class:`MaskedOptimizerFactory` wraps any other registered d3rlpy optimizer
factory. Both are registered d3rlpy ``OptimizerFactory`` types, so they
serialise inside algorithm configs (``"masked_adamw"``, ``"masked"``).
Importing this module registers them; the package ``__init__`` has already
silenced d3rlpy's old-gym notice by then.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from d3rlpy.optimizers import (
    OptimizerFactory,
    OptimizerWrapper,
    make_optimizer_field,
    register_optimizer_factory,
)
from d3rlpy.serializable_config import CONFIG_STORAGE
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "DECAY_RULES",
    "MaskedAdamWFactory",
    "MaskedOptimizerFactory",
    "MaskedOptimizerWrapper",
    "split_weight_decay",
    "unique_parameters",
]

#: Valid values of :attr:`MaskedAdamWFactory.decay_rule`.
DECAY_RULES: tuple[str, ...] = ("gpt", "ndim")

_DECAY_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NO_DECAY_MODULES = (nn.LayerNorm, nn.Embedding)


class MaskedOptimizerWrapper(OptimizerWrapper):
    """d3rlpy ``OptimizerWrapper`` whose next ``step()`` can freeze entries.

    ``set_trainable_entries({param: bool_mask})`` marks which entries of each
    listed parameter may change in the *next* ``step()`` (True = may change);
    parameters not listed update normally. During that step the frozen
    entries of the parameter **and** of every optimizer-state tensor of the
    parameter's shape (AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``;
    SGD ``momentum_buffer``) are restored bit-for-bit, so neither weight decay
    nor momentum moves them. A state tensor that the step itself creates
    (lazy initialisation) gets zeros at the frozen entries, i.e. the value it
    would have had without any update. Scalar state (Adam's per-tensor
    ``step`` count) is shared by the whole tensor and keeps advancing.

    The mask is consumed by the next ``step()`` and cleared afterwards, so a
    stale mask can never leak into a later step; set it before every step
    that needs one. Cost per masked parameter: one copy of it and of its
    same-shape state tensors into persistent scratch buffers (allocated on
    first use: as much extra memory as the masked parameters and their state)
    plus one in-place ``torch.where`` each; no host syncs. Not meant for
    CUDA-graph capture of ``step()``.
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        optim: Optimizer,
        compiled: bool,
        clip_grad_norm: float | None = None,
        lr_scheduler: LRScheduler | None = None,
    ):
        super().__init__(
            params=params,
            optim=optim,
            compiled=compiled,
            clip_grad_norm=clip_grad_norm,
            lr_scheduler=lr_scheduler,
        )
        self._trainable: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._scratch: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def trainable_entries(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The pending ``(parameter, mask)`` pairs for the next step, or None."""
        return self._trainable

    def set_trainable_entries(
        self,
        masks: Mapping[nn.Parameter, torch.Tensor]
        | Mapping[torch.Tensor, torch.Tensor]
        | None,
    ) -> None:
        """Set (or with None, clear) which entries the next ``step()`` may change.

        Args:
            masks: parameter -> bool tensor of the parameter's shape and
                device, True where the entry may change. Keys must be
                parameters of this optimizer (``Tensor`` keys are accepted
                because torch types ``module.weight`` as ``Tensor``).
        """
        if masks is None or len(masks) == 0:
            self._trainable = None
            return
        known = {id(p) for group in self._optim.param_groups for p in group["params"]}
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for param, mask in masks.items():
            if id(param) not in known:
                raise ValueError(
                    f"parameter of shape {tuple(param.shape)} is not optimised "
                    "by this optimizer"
                )
            if mask.dtype != torch.bool:
                raise ValueError(
                    f"trainable-entry masks must be bool, got {mask.dtype}"
                )
            if mask.shape != param.shape:
                raise ValueError(
                    f"trainable-entry mask shape {tuple(mask.shape)} != parameter "
                    f"shape {tuple(param.shape)}"
                )
            if mask.device != param.device:
                raise ValueError(
                    f"trainable-entry mask on {mask.device}, parameter on "
                    f"{param.device}"
                )
            pairs.append((param, mask))
        self._trainable = pairs

    def set_update_mask(
        self,
        masks: Mapping[nn.Parameter, torch.Tensor]
        | Mapping[torch.Tensor, torch.Tensor]
        | None,
    ) -> None:
        """Deprecated name of :meth:`set_trainable_entries` (it was easy to
        confuse with the task masks' ``update_masks``)."""
        warnings.warn(
            "set_update_mask is deprecated; use set_trainable_entries",
            DeprecationWarning,
            stacklevel=2,
        )
        self.set_trainable_entries(masks)

    def _same_shape_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self._optim.state.get(param, {})
        return {
            key: value
            for key, value in state.items()
            if isinstance(value, torch.Tensor) and value.shape == param.shape
        }

    def _scratch_for(
        self, param: torch.Tensor, key: str, like: torch.Tensor
    ) -> torch.Tensor:
        # Persistent snapshot buffers: fresh large allocations (page faults on
        # CPU) cost more than the copy itself, so each is allocated once.
        slot = (id(param), key)
        buf = self._scratch.get(slot)
        if (
            buf is None
            or buf.shape != like.shape
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = torch.empty_like(like, memory_format=torch.contiguous_format)
            self._scratch[slot] = buf
        return buf

    def step(self) -> None:
        """Clip gradients, step, restore frozen entries, step the lr scheduler."""
        pending, self._trainable = self._trainable, None

        if self._clip_grad_norm:
            nn.utils.clip_grad_norm_(self._params, max_norm=self._clip_grad_norm)

        # Snapshot: (param, mask, old param, {state key: old state}).
        snapshots: list[
            tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
        ] = []
        with torch.no_grad():
            for param, mask in pending or ():
                old_state = {
                    key: self._scratch_for(param, key, value).copy_(value)
                    for key, value in self._same_shape_state(param).items()
                }
                old_param = self._scratch_for(param, "\0param", param).copy_(param)
                snapshots.append((param, mask, old_param, old_state))

        self._optim.step()

        with torch.no_grad():
            for param, mask, old_param, old_state in snapshots:
                # where(..., out=x) with x also an input is a full overlap,
                # which torch allows (as for any in-place op): one pass.
                data = param.detach()
                torch.where(mask, data, old_param, out=data)
                for key, value in self._same_shape_state(param).items():
                    if key in old_state:
                        torch.where(mask, value, old_state[key], out=value)
                    else:  # created by this step: frozen entries stay at zero
                        value.masked_fill_(~mask, 0)

        if self._lr_scheduler:
            self._lr_scheduler.step()


def unique_parameters(
    named_modules: Iterable[tuple[str, nn.Module]],
) -> list[nn.Parameter]:
    """All parameters reachable from ``named_modules``, each once, in order."""
    seen: dict[int, nn.Parameter] = {}
    for _, module in named_modules:
        for param in module.parameters():
            seen.setdefault(id(param), param)
    return list(seen.values())


def split_weight_decay(
    named_modules: Iterable[tuple[str, nn.Module]], rule: str = "gpt"
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (decay, no_decay), each sorted by full name.

    ``rule="gpt"`` mirrors d3rlpy's ``GPTAdamWFactory``: weights of
    ``Linear``/``Conv`` modules decay; biases, ``LayerNorm`` and ``Embedding``
    weights and anything else do not. ``rule="ndim"`` decays every parameter
    with at least 2 dims except ``Embedding`` weights — useful when masked
    layers are custom modules that are not ``nn.Linear`` subclasses.

    A parameter reached under several names (shared or tied) appears once,
    under the first name seen, and decays only if every owner says so.
    """
    if rule not in DECAY_RULES:
        raise ValueError(f"unknown decay rule {rule!r}; valid rules: {DECAY_RULES}")
    names: dict[int, str] = {}
    params: dict[int, nn.Parameter] = {}
    votes: dict[int, bool] = {}  # id -> decays (False wins on conflict)
    for prefix, module in named_modules:
        for sub_name, sub in module.named_modules(prefix=prefix):
            for param_name, param in sub.named_parameters(recurse=False):
                full_name = f"{sub_name}.{param_name}" if sub_name else param_name
                if rule == "gpt":
                    decays = param_name.endswith("weight") and isinstance(
                        sub, _DECAY_MODULES
                    )
                else:
                    decays = param.dim() >= 2 and not isinstance(sub, nn.Embedding)
                key = id(param)
                names.setdefault(key, full_name)
                params.setdefault(key, param)
                votes[key] = votes.get(key, True) and decays
    order = sorted(params, key=lambda key: names[key])
    decay = [params[key] for key in order if votes[key]]
    no_decay = [params[key] for key in order if not votes[key]]
    return decay, no_decay


def _combine(outer: Any, inner: Any, what: str) -> Any:
    if outer is not None and inner is not None and outer != inner:
        raise ValueError(
            f"{what} is set both on MaskedOptimizerFactory ({outer!r}) and on "
            f"its inner optim_factory ({inner!r}); set it on one of them"
        )
    return outer if outer is not None else inner


class _WrapsWithMasks:
    """The ``create`` of both masked factories: their torch optimizer with
    update masks, gradient clipping and the learning-rate schedule, wrapped
    the way d3rlpy's own factories wrap theirs."""

    def _parts(
        self, named_modules: Sequence[tuple[str, nn.Module]], lr: float
    ) -> tuple[torch.optim.Optimizer, float | None, Any]:
        """(torch optimizer, clip_grad_norm, lr scheduler factory or None)."""
        raise NotImplementedError

    def create(
        self,
        named_modules: Iterable[tuple[str, nn.Module]],
        lr: float,
        compiled: bool,
    ) -> MaskedOptimizerWrapper:
        named_modules = list(named_modules)
        optim, clip, scheduler = self._parts(named_modules, lr)
        return MaskedOptimizerWrapper(
            params=unique_parameters(named_modules),
            optim=optim,
            compiled=compiled,
            clip_grad_norm=clip,
            lr_scheduler=scheduler.create(optim) if scheduler else None,
        )


@dataclasses.dataclass()
class MaskedAdamWFactory(_WrapsWithMasks, OptimizerFactory):
    """AdamW with GPT-style weight-decay groups and update masks.

    .. code-block:: python

        factory = MaskedAdamWFactory(
            weight_decay=1e-4,
            clip_grad_norm=0.25,
            lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=10000),
        )

    Args:
        clip_grad_norm: maximum gradient norm (None: no clipping).
        lr_scheduler_factory: d3rlpy ``LRSchedulerFactory`` or None.
        betas: AdamW coefficients of the running averages.
        eps: AdamW denominator term.
        weight_decay: decoupled weight decay of the decay group.
        amsgrad: use the AMSGrad variant.
        decay_rule: ``"gpt"`` or ``"ndim"``, see :func:`split_weight_decay`.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    amsgrad: bool = False
    decay_rule: str = "gpt"

    def _parts(
        self, named_modules: Sequence[tuple[str, nn.Module]], lr: float
    ) -> tuple[torch.optim.Optimizer, float | None, Any]:
        optim = self.create_optimizer(named_modules, lr)
        return optim, self.clip_grad_norm, self.lr_scheduler_factory

    def create_optimizer(
        self, named_modules: Iterable[tuple[str, nn.Module]], lr: float
    ) -> AdamW:
        decay, no_decay = split_weight_decay(named_modules, self.decay_rule)
        return AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=lr,
            betas=self.betas,
            eps=self.eps,
            amsgrad=self.amsgrad,
        )

    @staticmethod
    def get_type() -> str:
        return "masked_adamw"


@dataclasses.dataclass()
class MaskedOptimizerFactory(_WrapsWithMasks, OptimizerFactory):
    """Any registered d3rlpy optimizer factory, with update masks.

    ``create`` takes the torch optimizer from ``optim_factory.create_optimizer``
    and wraps it in :class:`MaskedOptimizerWrapper`. ``clip_grad_norm`` and
    ``lr_scheduler_factory`` may be set here or on the inner factory, not on
    both with different values (ValueError).

    Args:
        optim_factory: the inner factory (default ``AdamFactory()``).
    """

    optim_factory: OptimizerFactory = make_optimizer_field()

    def _parts(
        self, named_modules: Sequence[tuple[str, nn.Module]], lr: float
    ) -> tuple[torch.optim.Optimizer, float | None, Any]:
        inner = self.optim_factory
        clip = _combine(self.clip_grad_norm, inner.clip_grad_norm, "clip_grad_norm")
        scheduler_factory = _combine(
            self.lr_scheduler_factory,
            inner.lr_scheduler_factory,
            "lr_scheduler_factory",
        )
        return inner.create_optimizer(named_modules, lr), clip, scheduler_factory

    @staticmethod
    def get_type() -> str:
        return "masked"


def _register(cls: type[OptimizerFactory]) -> None:
    """Register ``cls`` once; a reload of this module replaces its own entry."""
    registry = CONFIG_STORAGE[OptimizerFactory].config_list
    existing = registry.get(cls.get_type())
    if existing is None:
        register_optimizer_factory(cls)
    elif (existing.__module__, existing.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    ):
        registry[cls.get_type()] = cls  # same class re-imported (reload)
    else:
        raise RuntimeError(
            f"optimizer type {cls.get_type()!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}"
        )


_register(MaskedAdamWFactory)
_register(MaskedOptimizerFactory)
