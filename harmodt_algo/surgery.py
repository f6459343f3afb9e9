"""Gradient surgery: combining per-task gradients into one update.

The standard alternatives to per-task masks for conflicting task gradients,
as pure functions on a ``(T, P)`` matrix of per-task gradients (one row per
task, ``P`` parameters), returning the ``(P,)`` update direction on the scale
of the plain mean (which is what a mean-of-task-losses backward gives):

- **PCGrad** (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS
  2020, Alg. 1): each task's gradient is projected onto the normal plane of
  every other task's gradient it conflicts with (negative inner product), the
  others taken in a random order; the update is the mean of the projected
  gradients.
- **CAGrad** (Liu et al., "Conflict-Averse Gradient Descent for Multi-task
  Learning", NeurIPS 2021, Alg. 1): the update ``g0 + (c·|g0| / |g_w|)·g_w``
  maximises the worst task's improvement within a ball of radius ``c·|g0|``
  around the mean gradient ``g0``, with ``g_w = Σ w_i g_i`` and ``w`` on the
  simplex minimising ``g_w·g0 + c·|g0|·|g_w|``; divided by ``1 + c²`` as the
  authors' code does. ``c = 0`` is the plain mean. The simplex problem is
  solved here by exponentiated-gradient (mirror) descent, a fixed number of
  steps: deterministic and free of a solver dependency.
"""

from __future__ import annotations

import torch

__all__ = ["SURGERIES", "cagrad", "combine", "pcgrad"]

#: Valid ``gradient_surgery`` values: none is the plain mean of task losses.
SURGERIES: tuple[str, ...] = ("none", "pcgrad", "cagrad")


def _check(grads: torch.Tensor) -> None:
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(f"grads must be (T, P) with T >= 1, got {tuple(grads.shape)}")


def pcgrad(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad's update: the mean of the projected task gradients, (P,).

    ``generator`` orders the other tasks per task (the paper shuffles them).
    """
    _check(grads)
    num_tasks = grads.shape[0]
    norms2 = (grads * grads).sum(dim=1).clamp(min=1e-20)  # (T,)
    projected = grads.clone()  # (T, P)
    for i in range(num_tasks):
        order = torch.randperm(num_tasks, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            dot = torch.dot(projected[i], grads[j])
            if dot < 0:
                projected[i] -= (dot / norms2[j]) * grads[j]
    return projected.mean(dim=0)


def _simplex_weights(gram: torch.Tensor, c: float, steps: int = 200) -> torch.Tensor:
    """argmin over the simplex of ``w·G·1/T + c·|g0|·sqrt(w·G·w)`` (T,), by
    exponentiated-gradient descent from the uniform weights."""
    num_tasks = gram.shape[0]
    mean_row = gram.mean(dim=1)  # (T,): g_i · g0
    g0_norm = gram.mean().clamp(min=0.0).sqrt()
    scale = gram.diagonal().max().clamp(min=1e-20)  # step size in gradient units
    w = torch.full((num_tasks,), 1.0 / num_tasks, dtype=gram.dtype, device=gram.device)
    for _ in range(steps):
        gw_norm = (w @ gram @ w).clamp(min=1e-20).sqrt()
        grad = mean_row + c * g0_norm * (gram @ w) / gw_norm  # (T,)
        w = w * torch.exp(-grad / scale)
        w = w / w.sum()
    return w


def cagrad(grads: torch.Tensor, c: float = 0.5) -> torch.Tensor:
    """CAGrad's update (P,); ``c`` >= 0 is the radius of the ball around the
    mean gradient, relative to its norm (the paper's default 0.5)."""
    _check(grads)
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    g0 = grads.mean(dim=0)  # (P,)
    if c == 0:
        return g0
    gram = grads @ grads.T  # (T, T)
    w = _simplex_weights(gram, c)  # (T,)
    gw = w @ grads  # (P,)
    g0_norm = gram.mean().clamp(min=0.0).sqrt()
    update = g0 + (c * g0_norm / gw.norm().clamp(min=1e-12)) * gw
    return update / (1.0 + c * c)


def combine(
    kind: str, grads: torch.Tensor, generator: torch.Generator, c: float
) -> torch.Tensor:
    """The ``(P,)`` update of ``kind`` in :data:`SURGERIES` from ``(T, P)``."""
    if kind == "pcgrad":
        return pcgrad(grads, generator)
    if kind == "cagrad":
        return cagrad(grads, c)
    if kind == "none":
        _check(grads)
        return grads.mean(dim=0)
    raise ValueError(f"unknown gradient surgery {kind!r}; choose one of {SURGERIES}")
