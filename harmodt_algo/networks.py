"""The torch modules of HarmoDT: a Decision Transformer whose blocks run masked.

Why a network of our own rather than d3rlpy's ``ContinuousDecisionTransformer``:
every task acts through its own sub-network θ ⊙ M_t, and a *mixed* batch holds
sequences of several tasks at once. The block layers therefore take their
(effective) weights as arguments: a plain ``(out, in)`` weight when the whole
batch shares one task, or a per-sequence ``(B, out, in)`` weight for mixed
batches, computed with one batched matmul instead of a Python loop over tasks.

What is masked (documented choice, see README): every parameter of the
transformer blocks (LayerNorms, fused QKV, attention output projection, MLP,
biases included) in the forward pass. Token embeddings, the timestep
embedding, the final LayerNorm and the action head are shared by all tasks
and, by default, trained by every task. With ``shared_update_masks`` they
carry per-task *update* masks that take part in drop and grow, as the
release's embeddings and heads do (design §4, §6).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MaskedDecisionTransformer",
    "TaskMasks",
    "PromptBank",
    "BatchWeights",
    "effective_weights",
    "TaskLayout",
]

#: Additive attention bias for forbidden positions (as d3rlpy: finite, so a
#: fully padded row stays finite instead of NaN).
_NEG = -10000.0

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
}


def activation_names() -> tuple[str, ...]:
    return tuple(_ACTIVATIONS)


def _buffer_name(param_name: str) -> str:
    # buffers cannot contain dots
    return param_name.replace(".", "__")


class _Block(nn.Module):
    """Parameter holder of one GPT block; its forward lives in the parent.

    Standard ``nn.Linear``/``nn.LayerNorm`` modules are used for storage so
    initialisation, naming and d3rlpy's weight-decay grouping (by module type)
    work unchanged.
    """

    def __init__(self, embed_size: int, ff_size: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_size, eps=0.003)
        self.qkv = nn.Linear(embed_size, 3 * embed_size)
        self.proj = nn.Linear(embed_size, embed_size)
        self.ln2 = nn.LayerNorm(embed_size, eps=0.003)
        self.fc1 = nn.Linear(embed_size, ff_size)
        self.fc2 = nn.Linear(ff_size, embed_size)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w.T + b`` for a shared ``w (out, in)`` or grouped ``w (n, out, in)``.

    Grouped: the leading axis of ``x`` splits into ``n`` equal contiguous groups,
    group ``i`` using ``w[i]`` (n = B for per-sequence weights, n = U tasks when
    the batch is sorted into equal task groups): one batched matmul.
    """
    if w.dim() == 2:
        return F.linear(x, w, b)
    n, out, width = w.shape
    xg = x.reshape(n, -1, width)  # (n, rows, in)
    y = torch.baddbmm(b.unsqueeze(1), xg, w.transpose(1, 2))  # (n, rows, out)
    return y.reshape(*x.shape[:-1], out)


def _layer_norm(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float
) -> torch.Tensor:
    size = x.shape[-1:]
    if w.dim() == 1:
        return F.layer_norm(x, size, w, b, eps)
    # grouped affine, as in _linear: (n, rows, D) * (n, 1, D) + (n, 1, D)
    y = F.layer_norm(x, size, None, None, eps).reshape(w.shape[0], -1, size[0])
    return (y * w.unsqueeze(1) + b.unsqueeze(1)).reshape(x.shape)


class TaskMasks(nn.Module):
    """Every task's binary mask over the masked parameters, as bool buffers.

    Buffers (not parameters) so d3rlpy's checkpointing carries them bit-exactly
    and the optimizer never sees them. One byte per entry per task in RAM.
    ``step`` counts optimizer steps so a reloaded model resumes its schedules;
    ``changed`` (T,) counts every entry each task has dropped so far (the
    total turnover). With ``accumulate_entries = N`` the module also holds the
    accumulated-gradient harmony estimator's state: ``grad_sum`` (T, N) and
    ``grad_count`` (T,), so a resumed run continues the running means exactly.
    """

    step: torch.Tensor
    schedule_horizon: torch.Tensor
    changed: torch.Tensor
    grad_sum: torch.Tensor
    grad_count: torch.Tensor

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        num_tasks: int,
        accumulate_entries: int = 0,
        accumulate_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.names: tuple[str, ...] = tuple(shapes)
        self.num_tasks = num_tasks
        for name, shape in shapes.items():
            self.register_buffer(
                _buffer_name(name), torch.ones((num_tasks, *shape), dtype=torch.bool)
            )
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("schedule_horizon", torch.zeros((), dtype=torch.int64))
        self.register_buffer("changed", torch.zeros(num_tasks, dtype=torch.int64))
        self.register_buffer(
            "grad_sum",
            torch.zeros((num_tasks, accumulate_entries), dtype=accumulate_dtype),
        )
        self.register_buffer("grad_count", torch.zeros(num_tasks, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # Models saved before the turnover counter and the accumulator existed
        # load with both at zero (an empty accumulator starts afresh).
        for name in ("changed", "grad_sum", "grad_count"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def accumulates(self) -> bool:
        """True when the accumulated-gradient estimator's state is held here."""
        return self.grad_sum.shape[1] > 0

    def accumulate(self, task_ids: torch.Tensor, grads: torch.Tensor) -> None:
        """Add one gradient row per task: ``grads`` (U, N) for tasks (U,)."""
        self.grad_sum.index_add_(0, task_ids, grads.to(self.grad_sum.dtype))
        self.grad_count.index_add_(
            0, task_ids, torch.ones_like(task_ids, dtype=torch.int64)
        )

    def mean_gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, N) float32 running means and (T,) bool: task saw a gradient."""
        count = self.grad_count.clamp(min=1).to(torch.float32).unsqueeze(1)  # (T, 1)
        return self.grad_sum.to(torch.float32) / count, self.grad_count > 0

    def reset_accumulator(self) -> None:
        self.grad_sum.zero_()
        self.grad_count.zero_()

    def get(self, name: str) -> torch.Tensor:
        """The (T, *shape) bool mask of parameter ``name``."""
        mask: torch.Tensor = getattr(self, _buffer_name(name))
        return mask

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: self.get(name) for name in self.names}

    def assign(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Replace masks in place (keeps buffer identity for the checkpointer)."""
        for name in self.names:
            target = self.get(name)
            new = masks[name].to(device=target.device, dtype=torch.bool)
            if new.shape != target.shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(new.shape)}, "
                    f"expected {tuple(target.shape)}"
                )
            target.copy_(new)

    def union(self, task_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Entries active for at least one of ``task_ids`` (what may be updated)."""
        return {name: self.get(name)[task_ids].any(dim=0) for name in self.names}


class PromptBank(nn.Module):
    """Each task's trajectory prompt (Prompt-DT), stored as buffers.

    Buffers so a saved model carries its prompts; with ``prompt_length == 0``
    the tensors are empty and the model is a plain (multi-task) DT.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    returns_to_go: torch.Tensor
    timesteps: torch.Tensor
    masks: torch.Tensor

    def __init__(
        self,
        num_tasks: int,
        prompt_length: int,
        observation_size: int,
        action_size: int,
    ):
        super().__init__()
        t, p = num_tasks, prompt_length
        self.register_buffer("observations", torch.zeros(t, p, observation_size))
        self.register_buffer("actions", torch.zeros(t, p, action_size))
        self.register_buffer("returns_to_go", torch.zeros(t, p, 1))
        self.register_buffer("timesteps", torch.zeros(t, p, dtype=torch.int64))
        self.register_buffer("masks", torch.zeros(t, p))

    @property
    def length(self) -> int:
        return int(self.observations.shape[1])

    def assign(self, arrays: Mapping[str, torch.Tensor]) -> None:
        for key in ("observations", "actions", "returns_to_go", "timesteps", "masks"):
            target: torch.Tensor = getattr(self, key)
            value = torch.as_tensor(arrays[key]).to(target.device, target.dtype)
            if value.shape != target.shape:
                raise ValueError(
                    f"prompt {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(target.shape)}"
                )
            target.copy_(value)


@dataclasses.dataclass(frozen=True)
class BatchWeights:
    """The block weights of one batch: θ ⊙ M_t for the batch's distinct tasks.

    ``unique`` (U,) are the distinct task ids, ``inverse`` (B,) maps each
    sequence to its row of ``unique``. With ``shared`` the tensors are
    param-shaped and serve every row (one task, or dense masks: the cost of an
    unmasked step); otherwise they are ``(U, *shape)``. ``grouped`` means the
    sequences are sorted by task in equal-sized groups, so layers use the U
    task weights directly instead of gathering a copy per sequence. ``counts``
    (host ints, one per distinct task) says the sequences are sorted by task
    in groups of those sizes (the mixed sampler's order), so the per-task
    rows are contiguous slices with no gather.
    """

    tensors: Mapping[str, torch.Tensor]
    unique: torch.Tensor  # (U,)
    inverse: torch.Tensor  # (B,)
    shared: bool
    grouped: bool = False
    counts: tuple[int, ...] | None = None

    def for_tasks(self, name: str) -> torch.Tensor:
        """Weights per distinct task: param-shaped if shared, else (U, *shape)."""
        return self.tensors[name]

    def for_sequences(self, name: str) -> torch.Tensor:
        """Weights for the sequence stream: param-shaped if shared, (U, *shape)
        if grouped (group i = task i), else per sequence (B, *shape)."""
        w = self.tensors[name]
        return w if self.shared or self.grouped else w[self.inverse]

    @property
    def by_task_rows(self) -> bool:
        """A mixed batch in unequal or unsorted task groups: its linear layers
        run once per task on that task's rows (:meth:`task_rows`) rather than
        on a copy of the weights per sequence."""
        return not (self.shared or self.grouped)

    @functools.cached_property
    def task_rows(self) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """The batch sorted by task: the sorting permutation (B,), each
        distinct task's number of sequences, and the permutation back."""
        perm = torch.argsort(self.inverse, stable=True)  # (B,): task 0's rows first
        counts = torch.bincount(self.inverse, minlength=self.unique.numel())
        return perm, counts.tolist(), torch.argsort(perm)

    def linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """The sequence stream through layer ``prefix`` (``weight``, ``bias``)."""
        w, b = self.tensors[prefix + "weight"], self.tensors[prefix + "bias"]
        if not self.by_task_rows:
            return _linear(x, self.for_sequences(prefix + "weight"),
                           self.for_sequences(prefix + "bias"))  # fmt: skip
        # unbind, not w[u]: one stack in backward instead of a full-size zero
        # fill and add per task
        ws, bs = w.unbind(0), b.unbind(0)
        if self.counts is not None:  # sorted already: slices, no gathers
            return _per_task_linear(x, ws, bs, self.counts)
        # one gather into task order, contiguous slices per task, one back:
        # a per-task gather would cost a full-size zero fill each in backward
        perm, counts, back = self.task_rows
        y = _per_task_linear(x.index_select(0, perm), ws, bs, counts)
        return y.index_select(0, back)  # (B, ..., out), batch order


def _per_task_linear(
    x: torch.Tensor,  # (B, ..., in), sorted by task
    ws: Sequence[torch.Tensor],  # U x (out, in)
    bs: Sequence[torch.Tensor],  # U x (out,)
    counts: Sequence[int],  # (U,) rows of each task, in order
) -> torch.Tensor:
    """Each task's contiguous rows through its own weights: (B, ..., out)."""
    groups = torch.split(x, list(counts))
    return torch.cat([F.linear(g, ws[u], bs[u]) for u, g in enumerate(groups)])


@dataclasses.dataclass(frozen=True)
class TaskLayout:
    """Which tasks a batch holds: distinct ids (U,), each sequence's row of
    them (B,), whether the batch is sorted into equal task groups, and, when it
    is sorted by task at all, the size of each task's group.

    Computed on the host from the sampler's NumPy ids (:meth:`from_ids`), so
    the training step needs no device-to-host sync to learn its own shape.
    """

    unique: torch.Tensor  # (U,)
    inverse: torch.Tensor  # (B,)
    grouped: bool
    counts: tuple[int, ...] | None = None  # per distinct task, if sorted

    @staticmethod
    def from_ids(ids: Any, device: torch.device | str) -> TaskLayout:
        unique, inverse, counts = np.unique(
            np.asarray(ids), return_inverse=True, return_counts=True
        )
        ordered = bool(np.all(np.diff(inverse.reshape(-1)) >= 0))
        return TaskLayout(
            torch.as_tensor(unique, dtype=torch.long, device=device),
            torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=device),
            ordered and bool((counts == counts[0]).all()),
            tuple(int(c) for c in counts) if ordered else None,
        )


def effective_weights(
    params: Mapping[str, torch.Tensor],
    masks: TaskMasks | None,
    task_ids: torch.Tensor,
    layout: TaskLayout | None = None,
) -> BatchWeights:
    """θ ⊙ M_t for the tasks of a batch (``masks=None``: dense, θ itself).

    One task in the batch → param-shaped tensors; several → ``(U, *shape)``
    per distinct task, applied with one batched matmul per layer when the batch
    is sorted into equal task groups, else one matmul per task on its rows.
    Without a host-computed ``layout`` it is derived from the ids copied to the
    host (a sync on an accelerator).
    """
    if layout is None:
        layout = TaskLayout.from_ids(task_ids.cpu().numpy(), task_ids.device)
    unique, inverse = layout.unique, layout.inverse  # (U,), (B,)
    if masks is None:
        return BatchWeights(dict(params), unique, inverse, shared=True)
    if unique.numel() == 1:
        t = unique[0]
        tensors = {name: p * masks.get(name)[t] for name, p in params.items()}
        return BatchWeights(tensors, unique, inverse, shared=True)
    tensors = {
        name: p.unsqueeze(0) * masks.get(name)[unique]  # (U, *shape)
        for name, p in params.items()
    }
    return BatchWeights(
        tensors, unique, inverse, shared=False, grouped=layout.grouped,
        counts=layout.counts,
    )  # fmt: skip


class MaskedDecisionTransformer(nn.Module):
    """Decision Transformer (+ optional prompt) with task-masked blocks.

    Tokens are (R̂_t, s_t, a_t) interleaved as in DT; with a prompt, the task's
    prompt tokens (own embeddings, as in Prompt-DT) are prepended. The action
    is predicted from each state token through tanh.
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        embed_size: int,
        num_layers: int,
        num_heads: int,
        ff_size: int,
        context_size: int,
        max_timestep: int,
        prompt_length: int,
        attn_dropout: float,
        resid_dropout: float,
        embed_dropout: float,
        activation_type: str,
    ):
        super().__init__()
        if embed_size % num_heads != 0:
            raise ValueError(
                f"embed_size ({embed_size}) must be divisible by num_heads "
                f"({num_heads})"
            )
        if activation_type not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation_type {activation_type!r}; "
                f"choose one of {sorted(_ACTIVATIONS)}"
            )
        self.embed_size = embed_size
        self.num_heads = num_heads
        self.context_size = context_size
        self.max_timestep = max_timestep
        self.prompt_length = prompt_length
        self.attn_dropout = attn_dropout
        self.activation = _ACTIVATIONS[activation_type]()

        self.embed_timestep = nn.Embedding(max_timestep + 1, embed_size)
        self.embed_return = nn.Linear(1, embed_size)
        self.embed_state = nn.Linear(observation_size, embed_size)
        self.embed_action = nn.Linear(action_size, embed_size)
        if prompt_length > 0:
            self.prompt_embed_timestep = nn.Embedding(max_timestep + 1, embed_size)
            self.prompt_embed_return = nn.Linear(1, embed_size)
            self.prompt_embed_state = nn.Linear(observation_size, embed_size)
            self.prompt_embed_action = nn.Linear(action_size, embed_size)
        self.embed_ln = nn.LayerNorm(embed_size)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.resid_drop = nn.Dropout(resid_dropout)
        self.blocks = nn.ModuleList(
            [_Block(embed_size, ff_size) for _ in range(num_layers)]
        )
        self.final_ln = nn.LayerNorm(embed_size, eps=0.003)
        self.predict_action = nn.Linear(embed_size, action_size)
        self.apply(_init_weights)

    def masked_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters task masks cover in the forward pass (every block
        parameter)."""
        return {f"blocks.{n}": p for n, p in self.blocks.named_parameters()}

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """Everything outside the blocks: token, timestep and prompt
        embeddings, the embedding and final LayerNorms, the action head. Every
        task runs them whole; with ``shared_update_masks`` each task may only
        *update* its own entries of them (the release's embeddings and heads)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("blocks.")}

    def _embed(
        self,
        embed_t: nn.Embedding,
        embed_r: nn.Linear,
        embed_s: nn.Linear,
        embed_a: nn.Linear,
        observations: torch.Tensor,  # (B, L, obs)
        actions: torch.Tensor,  # (B, L, A)
        returns_to_go: torch.Tensor,  # (B, L, 1)
        timesteps: torch.Tensor,  # (B, L)
        masks: torch.Tensor,  # (B, L) 1 = real step, 0 = padding
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, length = timesteps.shape
        time = embed_t(timesteps.long().clamp(0, self.max_timestep))  # (B, L, E)
        tokens = torch.stack(
            [
                embed_r(returns_to_go) + time,
                embed_s(observations) + time,
                embed_a(actions) + time,
            ],
            dim=2,
        )  # (B, L, 3, E)
        tokens = tokens.reshape(batch_size, 3 * length, self.embed_size)
        token_masks = masks.repeat_interleave(3, dim=1)  # (B, 3L)
        return tokens, token_masks

    def forward(
        self,
        observations: torch.Tensor,  # (B, L, obs)
        actions: torch.Tensor,  # (B, L, A)
        returns_to_go: torch.Tensor,  # (B, L, 1)
        timesteps: torch.Tensor,  # (B, L)
        masks: torch.Tensor,  # (B, L)
        weights: BatchWeights,
        prompts: PromptBank | None = None,
    ) -> torch.Tensor:
        """Predicted actions (B, L, A) through the blocks' ``weights`` (θ ⊙ M).

        The prompt is a separate stream computed once per *distinct task* of
        the batch (U rows, not B): prompt tokens come first and attention is
        causal, so they never see the sequence, and every sequence attends to
        its task's prompt keys and values. Same result as prepending the
        prompt to every sequence, at a fraction of the cost.
        """
        h, key_masks = self._embed(
            self.embed_timestep,
            self.embed_return,
            self.embed_state,
            self.embed_action,
            observations,
            actions,
            returns_to_go,
            timesteps,
            masks,
        )  # (B, 3L, E), (B, 3L)
        h = self.embed_drop(self.embed_ln(h))
        seq = h.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=h.device).tril()
        allowed = causal.unsqueeze(0) & (key_masks > 0).unsqueeze(1)  # (B, 3L, 3L)

        p: torch.Tensor | None = None
        p_bias: torch.Tensor | None = None
        if self.prompt_length > 0 and prompts is not None:
            rows = weights.unique
            p, p_masks = self._embed(
                self.prompt_embed_timestep,
                self.prompt_embed_return,
                self.prompt_embed_state,
                self.prompt_embed_action,
                prompts.observations[rows],
                prompts.actions[rows],
                prompts.returns_to_go[rows],
                prompts.timesteps[rows],
                prompts.masks[rows],
            )  # (U, 3P, E), (U, 3P)
            p = self.embed_drop(self.embed_ln(p))
            plen = p.shape[1]
            p_causal = torch.ones(plen, plen, dtype=torch.bool, device=h.device).tril()
            p_allowed = p_causal.unsqueeze(0) & (p_masks > 0).unsqueeze(1)
            p_bias = _additive(p_allowed)  # (U, 1, 3P, 3P)
            # sequences see all of their task's (unpadded) prompt tokens
            to_prompt = (p_masks[weights.inverse] > 0).unsqueeze(1).expand(-1, seq, -1)
            allowed = torch.cat([to_prompt, allowed], dim=2)  # (B, 3L, 3P + 3L)
        bias = _additive(allowed)  # (B, 1, 3L, 3P + 3L)

        for i in range(len(self.blocks)):
            h, p = self._block(h, bias, p, p_bias, weights, f"blocks.{i}.")
        h = self.final_ln(h)
        # action from each state token (positions 3k + 1)
        return torch.tanh(self.predict_action(h[:, 1::3, :]))  # (B, L, A)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # (N, H, S, E/H)
        n, heads, s, d = out.shape
        return out.transpose(1, 2).reshape(n, s, heads * d)

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, s, three_e = qkv.shape
        e = three_e // 3
        # (N, S, 3, H, E/H) -> 3 x (N, H, S, E/H)
        return tuple(
            qkv.view(n, s, 3, self.num_heads, e // self.num_heads).permute(
                2, 0, 3, 1, 4
            )
        )

    def _block(
        self,
        x: torch.Tensor,  # (B, 3L, E) sequence stream
        bias: torch.Tensor,  # (B, 1, 3L, [3P +] 3L)
        p: torch.Tensor | None,  # (U, 3P, E) prompt stream
        p_bias: torch.Tensor | None,  # (U, 1, 3P, 3P)
        weights: BatchWeights,
        prefix: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        eps = 0.003

        def ws(name: str) -> torch.Tensor:
            return weights.for_sequences(prefix + name)

        def wt(name: str) -> torch.Tensor:
            return weights.for_tasks(prefix + name)

        h = _layer_norm(x, ws("ln1.weight"), ws("ln1.bias"), eps)
        q, k, v = self._heads(weights.linear(h, prefix + "qkv."))
        if p is not None:
            assert p_bias is not None
            hp = _layer_norm(p, wt("ln1.weight"), wt("ln1.bias"), eps)
            qp, kp, vp = self._heads(_linear(hp, wt("qkv.weight"), wt("qkv.bias")))
            attn_p = self._attend(qp, kp, vp, p_bias)  # (U, 3P, E)
            k = torch.cat([_per_sequence(kp, weights), k], dim=2)  # (B, H, 3P+3L, E/H)
            v = torch.cat([_per_sequence(vp, weights), v], dim=2)
            p = p + self.resid_drop(_linear(attn_p, wt("proj.weight"), wt("proj.bias")))
            hp = _layer_norm(p, wt("ln2.weight"), wt("ln2.bias"), eps)
            hp = self.activation(_linear(hp, wt("fc1.weight"), wt("fc1.bias")))
            p = p + self.resid_drop(_linear(hp, wt("fc2.weight"), wt("fc2.bias")))
        attn = self._attend(q, k, v, bias)  # (B, 3L, E)
        x = x + self.resid_drop(weights.linear(attn, prefix + "proj."))
        h = _layer_norm(x, ws("ln2.weight"), ws("ln2.bias"), eps)
        h = self.activation(weights.linear(h, prefix + "fc1."))
        x = x + self.resid_drop(weights.linear(h, prefix + "fc2."))
        return x, p


def _per_sequence(x: torch.Tensor, weights: BatchWeights) -> torch.Tensor:
    """Rows per distinct task (U, ...) → rows per sequence (B, ...).

    One task: a broadcast view (its backward is a sum), not a gather (whose
    backward is a scatter-add).
    """
    if x.shape[0] == 1:
        return x.expand(weights.inverse.shape[0], *x.shape[1:])
    return x[weights.inverse]


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """(N, S, K) bool → (N, 1, S, K) additive attention bias."""
    bias = torch.zeros(allowed.shape, device=allowed.device)
    return bias.masked_fill(~allowed, _NEG).unsqueeze(1)


def _init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation, as d3rlpy's DT."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
