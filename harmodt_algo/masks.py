"""Per-task parameter masks for HarmoDT: initialisation, scoring and updates.

HarmoDT gives every task ``t`` a binary mask ``M_t`` over the shared parameters
``θ``; task ``t`` trains and acts with ``θ ⊙ M_t`` (design §2, §4). This module
holds the *mathematics* of those masks as pure tensor functions, with no
``nn.Module`` and no global state, so that each piece can be tested on its own
and reused by the model, the training loop and the reports:

- **initial densities** per layer (ERK as in RigL, uniform, or dense);
- **sampling** of one independent Bernoulli mask per task;
- **flattening** to one ``(T, N)`` row per task, because the mask update
  chooses with one global top-k over the flattened parameter vector (design §6);
- **scores**: the harmony score ``h_t = ḡ ⊙ g_t`` and the importance terms
  (fisher, magnitude, random);
- **drop-and-grow**, vectorised over tasks, preserving each task's density;
- the **change schedules** (cosine, constant): how many entries each
  update swaps;
- **reporting** (density, pairwise Jaccard overlap, drift).

Representation: a set of masks is ``dict[str, torch.Tensor]`` mapping a
parameter name to a ``bool`` tensor of shape ``(T, *param_shape)``, with
``T`` the number of tasks. Wherever an order over parameter names matters
(sampling, flattening) the default is ``sorted(names)`` so that results never
depend on dict insertion order; an explicit order can be passed instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "DENSITY_KINDS",
    "IMPORTANCE_KINDS",
    "swap_count",
    "drop_and_grow",
    "erk_densities",
    "flatten_masks",
    "NORMALIZATIONS",
    "clip_task_gradients",
    "harmony_scores",
    "importance_scores",
    "normalize_scores",
    "layer_densities",
    "mask_density",
    "mask_overlap",
    "mean_mask_overlap",
    "mask_drift",
    "sample_masks",
    "task_densities",
    "top_entries",
    "uniform_densities",
    "unflatten_masks",
]

#: Valid ``kind`` values for :func:`layer_densities`.
DENSITY_KINDS: tuple[str, ...] = ("erk", "uniform", "dense")
#: Valid ``kind`` values for :func:`importance_scores`.
IMPORTANCE_KINDS: tuple[str, ...] = ("fisher", "magnitude", "random")
#: Valid ``kind`` values for :func:`normalize_scores`.
NORMALIZATIONS: tuple[str, ...] = ("none", "rank", "scale")


# --------------------------------------------------------------------------- #
# Initial per-layer densities
# --------------------------------------------------------------------------- #
def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:  # also rejects NaN
        raise ValueError(
            f"density must satisfy 0 < density <= 1 (density = 1 - sparsity), "
            f"got {density!r}"
        )


def _numel(name: str, shape: Sequence[int]) -> int:
    n = math.prod(int(d) for d in shape)
    if n <= 0:
        raise ValueError(f"parameter {name!r} has empty shape {tuple(shape)}")
    return n


def erk_densities(
    shapes: Mapping[str, Sequence[int]], density: float
) -> dict[str, float]:
    """Erdős–Rényi-Kernel per-layer densities (RigL), total density = ``density``.

    Small layers (biases, LayerNorms, narrow matrices) carry relatively more
    information per entry, so ERK keeps them denser: layer ``l`` gets
    ``ε · sum(shape_l) / prod(shape_l)`` with one global ``ε`` chosen so that
    the parameter-weighted mean density equals ``density``. A layer whose
    density would exceed 1 is made dense and ``ε`` is re-solved for the rest,
    until no layer exceeds 1. A 1-D shape ``(n,)`` has ratio ``n / n = 1``, so
    biases and LayerNorm weights usually end up dense (standard behaviour). A
    0-d (scalar) parameter is treated as shape ``(1,)``.

    Args:
        shapes: parameter name -> parameter shape.
        density: target overall density ``1 - sparsity`` in ``(0, 1]``.

    Returns:
        parameter name -> density in ``(0, 1]``.
    """
    _check_density(density)
    sizes = {name: _numel(name, shape) for name, shape in shapes.items()}
    if density == 1.0 or not sizes:
        return {name: 1.0 for name in shapes}
    ratios = {
        name: (sum(int(d) for d in shape) if len(shape) > 0 else 1) / sizes[name]
        for name, shape in shapes.items()
    }
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        # Solve  Σ_dense n_l + ε Σ_rest ratio_l n_l = density · total  for ε.
        rest = [name for name in shapes if name not in dense]
        dense_size = sum(sizes[name] for name in dense)
        weighted = sum(ratios[name] * sizes[name] for name in rest)
        eps = (density * total - dense_size) / weighted
        # ε only grows as layers saturate (a saturated layer takes less than
        # ε·ratio·n), so marking every over-full layer at once is equivalent
        # to RigL's one-at-a-time loop.
        saturated = {name for name in rest if eps * ratios[name] > 1.0}
        if not saturated:
            break
        dense |= saturated
    return {name: 1.0 if name in dense else eps * ratios[name] for name in shapes}


def uniform_densities(
    shapes: Mapping[str, Sequence[int]], density: float
) -> dict[str, float]:
    """The same density in every layer (the simplest baseline to ERK)."""
    _check_density(density)
    for name, shape in shapes.items():
        _numel(name, shape)
    return {name: float(density) for name in shapes}


def layer_densities(
    kind: str, shapes: Mapping[str, Sequence[int]], density: float
) -> dict[str, float]:
    """Dispatch on ``kind`` in :data:`DENSITY_KINDS`.

    ``"dense"`` returns 1.0 everywhere regardless of ``density``: that is the
    MTDT / Prompt-DT baseline at no extra cost.
    """
    if kind == "erk":
        return erk_densities(shapes, density)
    if kind == "uniform":
        return uniform_densities(shapes, density)
    if kind == "dense":
        return {name: 1.0 for name in shapes}
    raise ValueError(f"unknown density kind {kind!r}; valid kinds: {DENSITY_KINDS}")


# --------------------------------------------------------------------------- #
# Sampling, flattening
# --------------------------------------------------------------------------- #
def sample_masks(
    shapes: Mapping[str, Sequence[int]],
    densities: Mapping[str, float],
    num_tasks: int,
    generator: torch.Generator,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Draw an independent Bernoulli mask per task and entry.

    Layers are visited in ``names`` order (default ``sorted(shapes)``), and a
    layer with density 1.0 is all True *without* consuming random numbers, so
    the result depends only on the generator state, the names, shapes and
    densities — never on dict insertion order. Tensors are created on the
    generator's device.

    Returns:
        name -> bool tensor ``(T, *shape)``.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    order = sorted(shapes) if names is None else list(names)
    device = generator.device
    masks: dict[str, torch.Tensor] = {}
    for name in order:
        shape = tuple(int(d) for d in shapes[name])
        d = float(densities[name])
        _check_density(d)
        if d >= 1.0:
            masks[name] = torch.ones(
                (num_tasks, *shape), dtype=torch.bool, device=device
            )
        else:
            u = torch.rand((num_tasks, *shape), generator=generator, device=device)
            masks[name] = u < d  # (T, *shape)
    return masks


def top_entries(
    scores: torch.Tensor,
    shapes: Mapping[str, Sequence[int]],
    densities: Mapping[str, float],
    names: Sequence[str],
) -> torch.Tensor:
    """Per task and layer, the ``round(density · n)`` entries with the
    highest score: a chosen (not drawn) mask with each layer's density.

    Args:
        scores: ``(T, N)`` in the flattened ``names`` order.

    Returns:
        A ``(T, N)`` bool tensor.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (T, N), got shape {tuple(scores.shape)}")
    out = torch.zeros_like(scores, dtype=torch.bool)  # (T, N)
    offset = 0
    for name in names:
        n = math.prod(int(d) for d in shapes[name])
        d = float(densities[name])
        _check_density(d)
        k = min(n, max(1, round(d * n)))
        layer = scores[:, offset : offset + n]  # (T, n)
        top = torch.topk(layer, k, dim=1).indices  # (T, k)
        out[:, offset : offset + n].scatter_(1, top, True)
        offset += n
    if offset != scores.shape[1]:
        raise ValueError(
            f"shapes cover {offset} entries, scores have {scores.shape[1]}"
        )
    return out


def flatten_masks(
    masks: Mapping[str, torch.Tensor], names: Sequence[str] | None = None
) -> torch.Tensor:
    """Concatenate per-layer masks into one ``(T, N)`` row per task.

    The mask update picks entries with one top-k over the whole flattened
    parameter vector, so it needs this view. ``names`` defaults to
    ``sorted(masks)``; use the same order for :func:`unflatten_masks`.
    """
    order = sorted(masks) if names is None else list(names)
    if not order:
        raise ValueError("no masks to flatten")
    num_tasks = masks[order[0]].shape[0]
    rows = []
    for name in order:
        m = masks[name]
        if m.shape[0] != num_tasks:
            raise ValueError(
                f"mask {name!r} has {m.shape[0]} tasks, expected {num_tasks}"
            )
        rows.append(m.reshape(num_tasks, -1))  # (T, n_l)
    return torch.cat(rows, dim=1)  # (T, N)


def unflatten_masks(
    flat: torch.Tensor,
    shapes: Mapping[str, Sequence[int]],
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_masks`: ``(T, N)`` -> name -> ``(T, *shape)``.

    Works for any dtype, so it also splits flat ``(T, N)`` scores or
    gradients back into layers. The returned tensors are views of ``flat``.
    """
    if flat.dim() != 2:
        raise ValueError(f"flat must be 2-D (T, N), got shape {tuple(flat.shape)}")
    order = sorted(shapes) if names is None else list(names)
    sizes = [_numel(name, shapes[name]) for name in order]
    if sum(sizes) != flat.shape[1]:
        raise ValueError(
            f"flat has N = {flat.shape[1]} entries per task but the shapes "
            f"sum to {sum(sizes)}"
        )
    num_tasks = flat.shape[0]
    parts = torch.split(flat, sizes, dim=1)
    return {
        name: part.reshape(num_tasks, *(int(d) for d in shapes[name]))
        for name, part in zip(order, parts, strict=True)
    }


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #
def harmony_scores(
    task_grads: torch.Tensor,
    leave_one_out: bool = False,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Harmony score ``h_t = ḡ ⊙ g_t`` (design §6).

    Positive where task ``t``'s gradient agrees in sign with the consensus,
    negative where it conflicts. The consensus is a *new* tensor: the release
    accumulated it in place into task 0's gradient and lost that gradient.
    The input is never modified.

    - ``leave_one_out=False``: ``ḡ = mean_s g_s`` (the release's: it contains
      ``g_t`` itself, so ``h_t`` is dominated by ``g_t² / T``);
    - ``leave_one_out=True``: ``ḡ_{-t} = (Σ_s g_s − g_t) / (T − 1)``, the
      consensus of the *other* tasks, so ``h_t`` measures agreement with them
      only. With a single task it falls back to ``ḡ = g_t``.

    ``valid`` (T,) bool marks tasks that have a gradient (an accumulator that
    saw no step of a task leaves it out): the consensus averages valid rows
    only; invalid rows get score 0.

    Args:
        task_grads: ``(T, N)`` per-task gradients.

    Returns:
        ``(T, N)`` harmony scores.
    """
    if task_grads.dim() != 2:
        raise ValueError(
            f"task_grads must be (T, N), got shape {tuple(task_grads.shape)}"
        )
    num_tasks = task_grads.shape[0]
    if valid is None:
        valid = torch.ones(num_tasks, dtype=torch.bool, device=task_grads.device)
    weight = valid.to(task_grads.dtype).unsqueeze(1)  # (T, 1)
    grads = task_grads * weight  # (T, N), invalid rows zero
    n_valid = int(valid.sum())
    total = grads.sum(dim=0, keepdim=True)  # (1, N), new tensor
    if leave_one_out and n_valid > 1:
        consensus = (total - grads) / (n_valid - 1)  # (T, N)
    else:
        consensus = total / max(n_valid, 1)  # (1, N)
    return consensus * grads  # (T, N)


def clip_task_gradients(task_grads: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each task's gradient scaled to L2 norm ``<= max_norm`` (a new tensor).

    The release clips every task's harmony gradient (to 0.25) before the
    consensus, so one task with large gradients cannot define "agreement" for
    all. ``max_norm <= 0`` returns an unmodified copy.
    """
    out = task_grads.clone()
    if max_norm <= 0:
        return out
    norms = out.norm(dim=1, keepdim=True)  # (T, 1)
    scale = (max_norm / norms.clamp(min=1e-12)).clamp(max=1.0)  # (T, 1)
    return out * scale


def normalize_scores(kind: str, scores: torch.Tensor) -> torch.Tensor:
    """Put a ``(T, N)`` score term on a unit-free scale, per task row.

    So that ``γ`` in ``γ·h + importance`` means the same for every importance
    kind (raw ``|θ|`` is ~10⁵× larger than raw ``h``):

    - ``"none"``: unchanged (copy);
    - ``"rank"``: ``rank(x) / (N − 1)`` in ``[0, 1]`` within the row (ties by
      a stable sort);
    - ``"scale"``: ``x / median(|x|)`` within the row (the row's mean ``|x|``
      if the median is 0; unchanged if both are 0): a robust scale that keeps
      signs and relative gaps.

    Both ``rank`` and ``scale`` are invariant to multiplying a term by any
    positive constant.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (T, N), got shape {tuple(scores.shape)}")
    if kind == "none":
        return scores.clone()
    if kind == "rank":
        n = scores.shape[1]
        order = torch.argsort(scores, dim=1, stable=True)  # (T, N)
        ranks = torch.empty_like(order)
        positions = torch.arange(n, device=scores.device).expand_as(order)
        ranks.scatter_(1, order, positions)  # (T, N): rank of each entry
        return ranks.to(torch.float32) / max(n - 1, 1)
    if kind == "scale":
        magnitude = scores.abs()  # (T, N)
        scale = magnitude.median(dim=1, keepdim=True).values  # (T, 1)
        fallback = magnitude.mean(dim=1, keepdim=True)  # (T, 1)
        scale = torch.where(scale > 0, scale, fallback)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scores / scale
    raise ValueError(
        f"unknown score normalization {kind!r}; valid kinds: {NORMALIZATIONS}"
    )


def importance_scores(
    kind: str,
    task_grads: torch.Tensor,
    weights: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance term added to the drop score, kind in :data:`IMPORTANCE_KINDS`.

    - ``"fisher"`` (HarmoDT-F): ``g_t²``, a diagonal Fisher estimate;
    - ``"magnitude"`` (HarmoDT-M): ``|θ|`` broadcast to every task;
    - ``"random"`` (HarmoDT-R, ablation): uniform in ``[0, 1)`` drawn from
      ``generator`` (required, for reproducibility).

    Args:
        task_grads: ``(T, N)`` per-task gradients.
        weights: ``(N,)`` flattened shared parameters.

    Returns:
        A new ``(T, N)`` tensor.
    """
    if task_grads.dim() != 2:
        raise ValueError(
            f"task_grads must be (T, N), got shape {tuple(task_grads.shape)}"
        )
    if kind == "fisher":
        return task_grads.square()  # (T, N)
    if kind == "magnitude":
        if weights.shape != (task_grads.shape[1],):
            raise ValueError(
                f"weights must be (N,) = ({task_grads.shape[1]},), "
                f"got {tuple(weights.shape)}"
            )
        return weights.abs().unsqueeze(0).expand_as(task_grads).clone()  # (T, N)
    if kind == "random":
        if generator is None:
            raise ValueError("importance kind 'random' needs a torch.Generator")
        u = torch.rand(
            task_grads.shape,
            generator=generator,
            device=generator.device,
            dtype=task_grads.dtype,
        )
        return u.to(task_grads.device)  # (T, N)
    raise ValueError(
        f"unknown importance kind {kind!r}; valid kinds: {IMPORTANCE_KINDS}"
    )


# --------------------------------------------------------------------------- #
# Mask update
# --------------------------------------------------------------------------- #
def _finite_scores(scores: torch.Tensor, what: str) -> torch.Tensor:
    # ±inf fills mark the excluded entries below; real scores are squeezed into
    # the finite range so that a real +inf/-inf cannot tie with a fill.
    if not scores.is_floating_point():
        scores = scores.to(torch.float32)
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"{what} contain NaN")
    info = torch.finfo(scores.dtype)
    return torch.nan_to_num(scores, posinf=info.max, neginf=info.min)


def drop_and_grow(
    masks: torch.Tensor,
    drop_scores: torch.Tensor,
    grow_scores: torch.Tensor,
    k: int | torch.Tensor,
    protected: torch.Tensor | None = None,
    growable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Swap ``k`` entries per task: drop the weakest active, grow the best inactive.

    For each task ``t``: the ``k_t`` *active* entries with the lowest
    ``drop_scores[t]`` become inactive, and the ``k_t`` entries that were
    *inactive before this update* with the highest ``grow_scores[t]`` become
    active (so an entry just dropped is never re-grown in the same update).
    The active count per task is preserved exactly. ``k_t`` is clipped to
    ``min(k_t, n_active_t, n_inactive_t)``. Ties are broken by ``torch.topk``
    (implementation-defined order). Vectorised over tasks: one ``topk`` per
    score matrix with per-row ``k`` applied by rank comparison.

    Args:
        masks: ``(T, N)`` bool current masks (not modified).
        drop_scores: ``(T, N)`` drop scores (e.g. ``γ·h_t + importance_t``).
        grow_scores: ``(T, N)`` grow scores (e.g. ``h_t``).
        k: number of swaps, one int for all tasks or a ``(T,)`` tensor.
        protected: ``(N,)`` bool, entries that are never dropped (e.g. biases
            and LayerNorm gains); ``k_t`` is then also clipped to the number
            of droppable active entries. They may still be grown.
        growable: ``(N,)`` bool, the only entries that may be grown (e.g. the
            shared layers when the blocks are prune-only). Then ``k_t``
            entries are dropped and at most ``k_t`` grown, as many as there
            are growable inactive entries: the active count may fall.

    Returns:
        A new ``(T, N)`` bool tensor.
    """
    if masks.dtype != torch.bool or masks.dim() != 2:
        raise ValueError(
            f"masks must be a (T, N) bool tensor, got {masks.dtype} "
            f"{tuple(masks.shape)}"
        )
    if drop_scores.shape != masks.shape or grow_scores.shape != masks.shape:
        raise ValueError(
            f"scores must have the mask shape {tuple(masks.shape)}, got "
            f"{tuple(drop_scores.shape)} and {tuple(grow_scores.shape)}"
        )
    num_tasks, n = masks.shape
    device = masks.device
    k_t = torch.as_tensor(k, device=device).to(torch.long)
    if k_t.dim() == 0:
        k_t = k_t.expand(num_tasks)
    if k_t.shape != (num_tasks,):
        raise ValueError(f"k must be an int or a ({num_tasks},) tensor")
    if bool((k_t < 0).any()):
        raise ValueError("k must be non-negative")
    droppable = masks
    if protected is not None:
        if protected.shape != (n,) or protected.dtype != torch.bool:
            raise ValueError(f"protected must be a ({n},) bool tensor")
        droppable = masks & ~protected.to(device).unsqueeze(0)  # (T, N)
    # count_nonzero: a bool .sum() would first copy (T, N) to int64
    n_active = torch.count_nonzero(masks, dim=1)  # (T,)
    n_droppable = torch.count_nonzero(droppable, dim=1)  # (T,)
    grow_from = ~masks  # (T, N): inactive before this update
    if growable is None:
        k_t = torch.minimum(torch.minimum(k_t, n_droppable), n - n_active)  # (T,)
        k_grow = k_t
    else:
        if growable.shape != (n,) or growable.dtype != torch.bool:
            raise ValueError(f"growable must be a ({n},) bool tensor")
        grow_from = grow_from & growable.to(device).unsqueeze(0)  # (T, N)
        k_t = torch.minimum(k_t, n_droppable)  # (T,)
        k_grow = torch.minimum(k_t, torch.count_nonzero(grow_from, dim=1))  # (T,)
    k_max = int(k_t.max()) if num_tasks > 0 else 0
    if k_max == 0:
        return masks.clone()

    drop_key = _finite_scores(drop_scores, "drop_scores").masked_fill(
        ~droppable, math.inf
    )  # (T, N): inactive or protected entries can never be dropped
    grow_key = _finite_scores(grow_scores, "grow_scores").masked_fill(
        ~grow_from, -math.inf
    )  # (T, N): active (or non-growable) entries can never be grown
    drop_idx = torch.topk(drop_key, k_max, dim=1, largest=False).indices  # (T, K)
    grow_idx = torch.topk(grow_key, k_max, dim=1, largest=True).indices  # (T, K)
    ranks = torch.arange(k_max, device=device).unsqueeze(0)  # (1, K)
    dropped = ranks < k_t.unsqueeze(1)  # (T, K): rank j < k_t
    grown = ranks < k_grow.unsqueeze(1)  # (T, K): rank j < k_grow_t

    # Because k_t <= n_droppable_t, the first k_t drop indices are droppable;
    # because k_grow_t <= the growable inactive count, the first k_grow_t grow
    # indices were inactive. Unselected ranks write their current value back
    # (a no-op); indices in a topk row are distinct, so the scatters are well
    # defined.
    new = masks.clone()
    new.scatter_(1, drop_idx, new.gather(1, drop_idx) & ~dropped)
    new.scatter_(1, grow_idx, new.gather(1, grow_idx) | grown)
    return new


#: How the entries rewired per update move over a run (``change_schedule``).
CHANGE_SCHEDULES = ("cosine", "constant")


def swap_count(
    schedule: str,
    step: int,
    total_steps: int,
    fraction: float,
    num_active: int,
    peak: int = 0,
) -> int:
    """Entries one task swaps (drops, and grows) at ``step``.

    ``cosine``: ``⌊fraction · num_active · sin²(π·step/S)⌋``, so masks move
    most mid-training and settle at the end (0 at ``step = 0`` and
    ``step = S``, ``⌊fraction·num_active⌋`` at ``S/2``). ``constant``:
    ``⌊fraction · num_active⌋`` at every update. With ``peak = k_max > 0``
    the count is absolute instead of a fraction of the active entries (the
    release's ``⌊k_max · sin²(π·s/S)⌋``). ``step`` is clamped into
    ``[0, S]``; the cosine value is exactly symmetric around ``S/2``.
    """
    if schedule not in CHANGE_SCHEDULES:
        raise ValueError(
            f"unknown change schedule {schedule!r}; choose one of "
            f"{list(CHANGE_SCHEDULES)}"
        )
    if peak < 0:
        raise ValueError(f"peak must be >= 0, got {peak}")
    if peak > 0:
        fraction, num_active = 1.0, peak
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not (0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    if num_active < 0:
        raise ValueError(f"num_active must be >= 0, got {num_active}")
    phase = 1.0
    if schedule == "cosine":
        s = min(max(step, 0), total_steps)
        # sin(πx) = sin(π(1−x)): evaluating at the nearer end makes the
        # schedule bit-symmetric and exactly 0 at both ends.
        s = min(s, total_steps - s)
        phase = math.sin(math.pi * s / total_steps) ** 2
    # The tiny cushion keeps e.g. 0.29 · 100 = 28.999999999999996 at 29.
    return int(math.floor(fraction * num_active * phase + 1e-9))


# --------------------------------------------------------------------------- #
# Reporting and storage
# --------------------------------------------------------------------------- #
def task_densities(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Fraction of active entries per task, ``(T,)`` float64."""
    if isinstance(masks, torch.Tensor):
        flat = masks.reshape(masks.shape[0], -1)  # (T, N)
    else:
        flat = flatten_masks(masks)  # (T, N)
    return flat.sum(dim=1, dtype=torch.float64) / flat.shape[1]


def mask_density(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> float:
    """Fraction of active entries over all tasks and parameters."""
    return float(task_densities(masks).mean())


def mask_overlap(masks_flat: torch.Tensor) -> torch.Tensor:
    """Pairwise Jaccard overlap ``|M_i ∩ M_j| / |M_i ∪ M_j|`` between task masks.

    For reports on how far the harmony subspaces diverge. Two empty masks
    count as identical (1.0). Counts are accumulated in float64 so they are
    exact for any realistic ``N``.

    Args:
        masks_flat: ``(T, N)`` bool.

    Returns:
        ``(T, T)`` float64, symmetric, ones on the diagonal.
    """
    if masks_flat.dim() != 2:
        raise ValueError(f"expected (T, N), got shape {tuple(masks_flat.shape)}")
    m = masks_flat.to(torch.float64)  # (T, N)
    inter = m @ m.T  # (T, T)
    sizes = m.sum(dim=1)  # (T,)
    union = sizes.unsqueeze(0) + sizes.unsqueeze(1) - inter  # (T, T)
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(inter))


def mean_mask_overlap(masks_flat: torch.Tensor) -> float | None:
    """Mean of :func:`mask_overlap` over distinct task pairs (``None`` for one
    task): one number for "how much do the tasks share"."""
    overlap = mask_overlap(masks_flat)  # (T, T)
    t = overlap.shape[0]
    if t < 2:
        return None
    return float((overlap.sum() - overlap.diagonal().sum()) / (t * (t - 1)))


def mask_drift(initial_flat: torch.Tensor, final_flat: torch.Tensor) -> torch.Tensor:
    """Per task, the fraction of its initially active entries that are off at
    the end: how far training moved the masks (drop-and-grow keeps the
    density, so as many entries were grown).

    Args:
        initial_flat: ``(T, N)`` bool, the masks before training.
        final_flat: ``(T, N)`` bool, the masks after training.

    Returns:
        ``(T,)`` float64 in [0, 1]; 0 for a task with an empty initial mask.
    """
    if initial_flat.shape != final_flat.shape or initial_flat.dim() != 2:
        raise ValueError(
            f"expected two (T, N) masks of one shape, got {tuple(initial_flat.shape)} "
            f"and {tuple(final_flat.shape)}"
        )
    dropped = (initial_flat & ~final_flat).sum(dim=1, dtype=torch.float64)  # (T,)
    active = initial_flat.sum(dim=1, dtype=torch.float64)  # (T,)
    share = dropped / active.clamp(min=1.0)  # (T,)
    return torch.where(active > 0, share, torch.zeros_like(active))
