"""What a ``HarmoDTConfig`` may hold: the choices of each setting and the
checks that run before anything is built (``HarmoDTConfig.validate``).

Its own module because the rules are one job that the Config, the CLI's
``--set`` and the benchmark's preset checks all read, and the algorithm
module is long enough without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import masks as mask_ops
from .networks import activation_names
from .surgery import SURGERIES

if TYPE_CHECKING:
    from .harmodt import HarmoDTConfig

__all__ = [
    "ACCUMULATOR_DTYPES",
    "MASK_UPDATE_FIELDS",
    "MAX_SEED",
    "mask_update_settings",
    "validate_config",
]

TASK_SCHEDULES = ("round_robin", "mixed")
#: Mask starts: drawn per layer density (erk, uniform, dense), or chosen
#: from each task's gradients at the initial weights with ERK's densities.
MASK_INITS = (*mask_ops.DENSITY_KINDS, "learned")
#: Seeds feed torch's and numpy's generators: one 32-bit range for both.
MAX_SEED = 2**32 - 1
HARMONY_ESTIMATORS = ("batch", "accumulated")
PRECISIONS = ("fp32", "bf16")
ACCUMULATOR_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


#: The config fields that define the mask update (``set_mask_update``
#: changes them; ``harmodt info`` and every benchmark cell report them).
MASK_UPDATE_FIELDS: tuple[str, ...] = (
    "mask_init",
    "sparsity",
    "mask_interval",
    "change_count",
    "change_fraction",
    "change_schedule",
    "importance",
    "harmony_gamma",
    "harmony_estimator",
    "mask_batch_size",
    "harmony_dropout",
    "harmony_leave_one_out",
    "harmony_grad_clip",
    "score_normalization",
    "protect_1d",
    "shared_update_masks",
    "block_growth",
    "accumulator_dtype",
)


def mask_update_settings(config: HarmoDTConfig) -> dict[str, Any]:
    """The mask-update settings of ``config`` as a plain dict."""
    return {name: getattr(config, name) for name in MASK_UPDATE_FIELDS}


def validate_config(config: HarmoDTConfig) -> None:
    """Fail fast with the valid choices, before anything is built."""

    def choice(name: str, value: str, valid: Sequence[str]) -> None:
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; choose one of {list(valid)}")

    choice("mask_init", config.mask_init, MASK_INITS)
    choice("importance", config.importance, mask_ops.IMPORTANCE_KINDS)
    choice("task_schedule", config.task_schedule, TASK_SCHEDULES)
    choice("precision", config.precision, PRECISIONS)
    choice("gradient_surgery", config.gradient_surgery, SURGERIES)
    if not config.cagrad_c >= 0.0:  # also rejects NaN
        raise ValueError(f"cagrad_c must be >= 0, got {config.cagrad_c}")
    if config.gradient_surgery != "none":
        if config.task_schedule != "mixed":
            raise ValueError(
                f"gradient_surgery={config.gradient_surgery!r} combines the "
                "gradients of the tasks in a batch: it needs "
                "task_schedule='mixed' (round-robin batches hold one task)"
            )
        if config.uses_masks and config.harmony_estimator == "accumulated":
            raise ValueError(
                "gradient_surgery and the accumulated harmony estimator do "
                "not combine; use harmony_estimator='batch'"
            )
    if config.compile_graph:
        raise ValueError(
            "compile_graph=True is not supported by HarmoDT: its blocks take "
            "per-task weights as arguments and its optimizer step restores "
            "frozen entries, neither of which d3rlpy's CUDA-graph capture "
            "handles; leave compile_graph=False (precision='bf16' is the "
            "supported speed-up)"
        )
    choice("change_schedule", config.change_schedule, mask_ops.CHANGE_SCHEDULES)
    choice("harmony_estimator", config.harmony_estimator, HARMONY_ESTIMATORS)
    choice("score_normalization", config.score_normalization, mask_ops.NORMALIZATIONS)
    choice("accumulator_dtype", config.accumulator_dtype, list(ACCUMULATOR_DTYPES))
    if not config.harmony_grad_clip >= 0.0:  # also rejects NaN
        raise ValueError(
            f"harmony_grad_clip must be >= 0 (0 = off), got {config.harmony_grad_clip}"
        )
    choice("activation_type", config.activation_type, activation_names())
    if not 0.0 <= config.sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {config.sparsity}")
    if not 0.0 <= config.change_fraction <= 1.0:
        raise ValueError(
            f"change_fraction must be in [0, 1], got {config.change_fraction}"
        )
    for name in ("mask_interval", "prompt_length", "ff_size", "change_count"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in (
        "batch_size",
        "mask_batch_size",
        "context_size",
        "embed_size",
        "num_layers",
        "num_heads",
        "max_timestep",
    ):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    if config.embed_size % config.num_heads:
        raise ValueError(
            f"embed_size ({config.embed_size}) must be divisible by num_heads "
            f"({config.num_heads})"
        )
    if (
        config.shared_update_masks
        and config.harmony_estimator == "accumulated"
        and config.task_schedule != "round_robin"
    ):
        raise ValueError(
            "shared_update_masks with the accumulated estimator needs "
            "task_schedule='round_robin' (a mixed batch's shared-layer "
            "gradient cannot be split by task); use harmony_estimator='batch'"
        )
    if not 0 <= config.seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {config.seed}")
    if len(set(config.task_names)) != len(config.task_names):
        raise ValueError(f"task_names has duplicates: {config.task_names}")
