"""Unseen tasks: give a trained model a task it never trained on (design §8).

A new task needs what every task has: a mask over the shared weights and, for
models with prompts, a trajectory prompt. The shared weights never change.

Methods (``ADAPT_METHODS``):

- ``vote``: the mask is the vote of the trained masks (an entry is active if at
  least ``threshold`` of the tasks use it); the prompt is the demonstrations'
  best-return segment, as for a training task. Zero gradient steps.
- ``tune``: ``vote``, then ``steps`` Adam steps on the demonstrations that move
  only the new task's prompt (its observations, actions and returns-to-go are
  the only tensors with gradients; dropout off); everything else stays
  bit-for-bit. Costs ``steps`` forward/backward passes at batch ``batch_size``.
- ``prompt``: the Prompt-DT baseline: all-ones mask (a dense model's only
  mask), the demonstrations' prompt.
- ``zero-shot``: the MTDT baseline: all-ones mask, no prompt information.
- ``finetune``: the upper reference, not an adaptation that keeps the model:
  the mask of ``vote`` (all ones on a dense model) and the demos' prompt (if
  the model has prompts), then ``steps`` Adam steps on the demonstrations that
  move **every** shared weight (through the new task's mask) and the new
  prompt, at the model's training learning rate, dropout as in training. The
  trained tasks act through the same shared weights, so they may forget:
  score a fine-tuned copy on the new task only. Costs ``steps`` training
  steps at batch ``batch_size``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data import MultiTaskDataset, as_multitask_dataset
from .networks import PromptBank, TaskMasks

if TYPE_CHECKING:  # pragma: no cover
    from .harmodt import HarmoDT, HarmoDTConfig

__all__ = [
    "ADAPT_METHODS",
    "SHARED_WEIGHT_METHODS",
    "add_task",
    "method_problem",
    "vote_masks",
]

ADAPT_METHODS: tuple[str, ...] = ("vote", "tune", "prompt", "zero-shot", "finetune")
#: ``tune``'s Adam rate: only a prompt moves, a few hundred steps.
PROMPT_LEARNING_RATE = 1e-3
#: Methods that change the shared weights (the model's other tasks may change).
SHARED_WEIGHT_METHODS: tuple[str, ...] = ("finetune",)


@dataclasses.dataclass
class _Prompts:
    """The prompt tensors of every task, duck-typed like ``PromptBank``."""

    observations: torch.Tensor
    actions: torch.Tensor
    returns_to_go: torch.Tensor
    timesteps: torch.Tensor
    masks: torch.Tensor


def vote_masks(masks: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(T, *shape)`` bool → ``(*shape)``: active where ≥ ``threshold`` of
    the tasks are (a fraction in (0, 1])."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"vote threshold must be in (0, 1], got {threshold!r}")
    share = masks.to(torch.float64).mean(dim=0)  # (*shape)
    return share >= threshold - 1e-12


def _has_task_masks(config: HarmoDTConfig) -> bool:
    """Whether the trained tasks have masks of their own to vote."""
    return bool(config.uses_masks and config.mask_init != "dense")


def method_problem(config: HarmoDTConfig, method: str) -> str | None:
    """Why ``method`` cannot add a task to a model of ``config`` (None: it
    can), naming the methods that can: one rule for ``add_task`` and for the
    benchmark, which checks it before any training rather than after hours
    of it."""
    problem = _why_not(config, method)
    if problem is None:
        return None
    fits = [m for m in ADAPT_METHODS if _why_not(config, m) is None]
    return f"{problem}; this model can use {', '.join(repr(m) for m in fits)}"


def _why_not(config: HarmoDTConfig, method: str) -> str | None:
    if method in ("vote", "tune") and not _has_task_masks(config):
        return (
            f"method {method!r} votes the trained masks, but this model has "
            "masks disabled (dense)"
        )
    if method in ("tune", "prompt") and config.prompt_length == 0:
        return f"method {method!r} uses a prompt, but this model has prompt_length 0"
    return None


def _demos(algo: HarmoDT, name: str, demos: Any) -> MultiTaskDataset:
    """The new task's demonstrations as a one-task dataset, checked."""
    try:
        data = as_multitask_dataset(demos)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot read the demonstrations of {name!r}: {exc}") from None
    if data.num_tasks > 1:
        if name not in data.task_names:
            raise ValueError(
                f"the demonstrations hold tasks {list(data.task_names)}, not {name!r}"
            )
        data = MultiTaskDataset.from_episodes(
            {name: data.episodes[data.task_names.index(name)]}
        )
    assert algo.impl is not None
    if tuple(data.observation_shape) != tuple(algo.impl.observation_shape):
        raise ValueError(
            f"demonstrations of {name!r} have observations of shape "
            f"{tuple(data.observation_shape)}, the model "
            f"{tuple(algo.impl.observation_shape)}"
        )
    if data.action_size != algo.impl.action_size:
        raise ValueError(
            f"demonstrations of {name!r} have {data.action_size}-dim actions, the "
            f"model {algo.impl.action_size}"
        )
    return data


def add_task(
    algo: HarmoDT,
    name: str,
    demos: Any,
    method: str = "vote",
    threshold: float = 0.5,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float | None = None,
    seed: int = 0,
) -> HarmoDT:
    """Add task ``name`` to the trained ``algo`` in place; returns ``algo``.

    ``learning_rate`` (Adam): ``tune`` 1e-3 (only a prompt moves), ``finetune``
    the model's training rate (the shared weights move), unless given.

    Every check happens before anything changes: a failed call leaves the
    model as it was.
    """
    impl = algo.impl
    if impl is None:
        raise ValueError("the model is not built yet: fit() or load it first")
    if method not in ADAPT_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {ADAPT_METHODS}")
    if name in algo.task_names:
        raise ValueError(f"the model already has a task {name!r}")
    cfg = algo.config
    problem = method_problem(cfg, method)
    if problem is not None:
        raise ValueError(problem)
    voted = method in ("vote", "tune") or (
        method == "finetune" and _has_task_masks(cfg)
    )
    if voted:
        vote_masks(torch.zeros(1, 1, dtype=torch.bool), threshold)  # checks it
    if steps <= 0 and method in ("tune", "finetune"):
        raise ValueError(f"{method} needs steps > 0, got {steps}")
    data = _demos(algo, name, demos)

    old = impl.modules
    masks, prompts = _grown(algo, old.masks, old.prompts)
    t = old.masks.num_tasks  # the new task's index
    for param in masks.names:
        row = (
            vote_masks(old.masks.get(param), threshold)
            if voted
            else torch.ones_like(old.masks.get(param)[0])
        )
        masks.get(param)[t] = row
    if cfg.prompt_length > 0 and method != "zero-shot":
        raw = data.prompt_arrays(cfg.prompt_length)  # (1, P, ...)
        new = algo.scale_prompts(raw)
        for key, value in new.items():
            getattr(prompts, key)[t] = value[0].to(getattr(prompts, key).dtype)
    algo.replace_task_state([*algo.task_names, name], masks, prompts)
    if method in ("tune", "finetune"):
        shared = method == "finetune"
        if learning_rate is None:
            learning_rate = cfg.learning_rate if shared else PROMPT_LEARNING_RATE
        _tune(algo, data, t, steps, batch_size, learning_rate, seed, shared)
    return algo


def _grown(
    algo: HarmoDT, masks: TaskMasks, prompts: PromptBank
) -> tuple[TaskMasks, PromptBank]:
    """Copies of the masks and prompts with one more (empty) task row."""
    t = masks.num_tasks
    shapes = {n: tuple(masks.get(n).shape[1:]) for n in masks.names}
    grown = TaskMasks(
        shapes,
        t + 1,
        accumulate_entries=masks.grad_sum.shape[1],
        accumulate_dtype=masks.grad_sum.dtype,
    ).to(masks.step.device)
    for name in masks.names:
        grown.get(name)[:t] = masks.get(name)
    grown.step.copy_(masks.step)
    grown.schedule_horizon.copy_(masks.schedule_horizon)
    grown.changed[:t] = masks.changed
    grown_prompts = PromptBank(
        t + 1,
        prompts.length,
        int(prompts.observations.shape[-1]),
        int(prompts.actions.shape[-1]),
    ).to(prompts.observations.device)
    for key in ("observations", "actions", "returns_to_go", "timesteps", "masks"):
        getattr(grown_prompts, key)[:t] = getattr(prompts, key)
    return grown, grown_prompts


def _tune(
    algo: HarmoDT,
    data: MultiTaskDataset,
    task: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    shared: bool,
) -> None:
    """Adam on the new task's prompt (if the model has prompts) and, when
    ``shared``, on every shared weight; otherwise the network is only read."""
    impl = algo.impl
    assert impl is not None
    bank = impl.modules.prompts
    has_prompt = algo.config.prompt_length > 0
    learned = {
        key: getattr(bank, key)[task].clone().requires_grad_(True)
        for key in (("observations", "actions", "returns_to_go") if has_prompt else ())
    }
    net = impl.modules.transformer
    params = [*learned.values(), *(net.parameters() if shared else ())]
    optim = torch.optim.Adam(params, lr=learning_rate)
    was_training = net.training
    # tune: dropout off (few demos, the network is only read); finetune:
    # dropout as in training, the shared weights learn
    net.train(shared)
    if not shared:
        impl.modules.freeze()  # the shared weights get no gradient at all
    rng = np.random.default_rng(seed)
    ids = torch.full((batch_size,), task, dtype=torch.long, device=impl.device)
    for _ in range(steps):
        batch = algo._to_torch(
            data.sample_batch(
                np.zeros(batch_size, np.int64), algo.config.context_size, rng
            )
        )
        view = (
            _Prompts(
                **{
                    key: torch.cat(
                        [getattr(bank, key)[:task], value.unsqueeze(0)]
                    )  # (T+1, P, ...) with the new task's row learnable
                    for key, value in learned.items()
                },
                timesteps=bank.timesteps,
                masks=bank.masks,
            )
            if has_prompt
            else None
        )
        optim.zero_grad()
        loss = impl.sequence_losses(
            batch,
            impl.task_weights(ids),
            synced=False,
            prompts=view,  # type: ignore[arg-type]
        ).mean()
        loss.backward()
        optim.step()
    net.train(was_training)
    if not shared:
        impl.modules.unfreeze()
    with torch.no_grad():
        for key, value in learned.items():
            getattr(bank, key)[task] = value.detach()
