"""What a trained model is, in numbers: parameter counts and the masks' state.

``harmodt info`` and the benchmark cells both report these; they are computed
here once so that a "parameter" or an "overlap" means the same in both.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from . import masks as mask_ops

if TYPE_CHECKING:
    from .harmodt import HarmoDT

__all__ = ["active_parameters", "count_parameters", "mask_movement", "mask_summary"]


def count_parameters(algo: Any) -> int:
    """Trainable parameters of a built d3rlpy algorithm (target networks and
    buffers such as masks and prompts excluded; shared ones counted once)."""
    impl = getattr(algo, "impl", None)
    if impl is None:
        raise RuntimeError("the model is not built yet")
    modules = impl.modules
    seen: set[int] = set()
    total = 0
    for field in dataclasses.fields(modules):
        if field.name.startswith("targ"):
            continue
        module = getattr(modules, field.name)
        if not isinstance(module, torch.nn.Module):
            continue
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                total += int(param.numel())
    return total


def active_parameters(algo: HarmoDT) -> float | None:
    """Mean over tasks of the parameters a task uses (forward-masked entries
    count only where its mask is on; update masks do not change what a task
    runs); None before the model is built."""
    impl = algo.impl
    if impl is None:
        return None
    masks = impl.flat_masks()[:, impl.forward_entries]  # (T, N_forward)
    per_task = count_parameters(algo) - masks.shape[1] + masks.float().sum(dim=1)
    return float(per_task.mean())


def mask_summary(algo: HarmoDT) -> dict[str, Any]:
    """The masks now: parameters (total, masked, active per task), density,
    the update settings, turnover and the pairwise task overlap."""
    from .config_checks import mask_update_settings

    impl = algo.impl
    assert impl is not None
    tasks = list(algo.task_names)
    flat = impl.flat_masks()  # (T, N) bool
    densities = mask_ops.task_densities(flat)  # (T,)
    overlap = mask_ops.mask_overlap(flat)  # (T, T)
    active = flat.sum(dim=1).tolist()  # (T,)
    t = len(tasks)
    pairs = [float(overlap[i, j]) for i in range(t) for j in range(i + 1, t)]
    turnover = impl.mask_turnover().tolist()  # (T,)
    return {
        "parameters": {
            "total": count_parameters(algo),
            "masked": int(flat.shape[1]),
            "active_per_task": {n: int(a) for n, a in zip(tasks, active, strict=True)},
        },
        "mask_density": {n: float(d) for n, d in zip(tasks, densities, strict=True)},
        "mask_update": mask_update_settings(algo.config),
        "mask_turnover": {
            "mean": sum(turnover) / max(len(turnover), 1),
            "per_task": {n: float(v) for n, v in zip(tasks, turnover, strict=True)},
        },
        "mask_overlap": {
            "mean": mask_ops.mean_mask_overlap(flat),
            "min": min(pairs) if pairs else None,
            "max": max(pairs) if pairs else None,
            "matrix": [[float(v) for v in row] for row in overlap.tolist()],
        },
    }


def mask_movement(initial: torch.Tensor, algo: HarmoDT) -> dict[str, Any]:
    """How far training moved the task masks: per-task drift from the initial
    masks, the total turnover (every entry ever dropped, over the initially
    active ones: counts entries that came back too), the mean pairwise
    Jaccard overlap between tasks before and after (1.0 = every task uses the
    same weights; None for one task), and the mask-update settings."""
    from .config_checks import mask_update_settings

    assert algo.impl is not None
    final = algo.impl.flat_masks()  # (T, N)
    drift = mask_ops.mask_drift(initial.to(final.device), final)  # (T,)
    return {
        "interval": int(algo.config.mask_interval),
        "settings": mask_update_settings(algo.config),
        "drift_mean": float(drift.mean()),
        "drift": dict(zip(algo.task_names, drift.tolist(), strict=True)),
        "turnover_mean": float(algo.impl.mask_turnover().mean()),
        "overlap_initial": mask_ops.mean_mask_overlap(initial),
        "overlap_final": mask_ops.mean_mask_overlap(final),
    }
