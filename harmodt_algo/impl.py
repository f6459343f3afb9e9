"""Torch side of HarmoDT: the frozen Modules and the Impl (inner loop + mask update).

Mirrors d3rlpy's ``DecisionTransformerImpl`` but every forward pass runs
through the tasks' masks, every optimizer step masks the *update*, and the
outer loop (``update_masks``) rewires masks by the harmony score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from d3rlpy.algos.transformer import TransformerAlgoImplBase
from d3rlpy.algos.transformer.inputs import TorchTransformerInput
from d3rlpy.optimizers import OptimizerWrapper
from d3rlpy.torch_utility import Modules, TorchTrajectoryMiniBatch, eval_api, train_api
from d3rlpy.types import Shape
from torch import nn

from . import masks as mask_ops
from . import surgery
from .fit_loop import round_robin_task
from .networks import (
    BatchWeights,
    MaskedDecisionTransformer,
    PromptBank,
    TaskLayout,
    TaskMasks,
    effective_weights,
)
from .optimizer import MaskedOptimizerWrapper

__all__ = ["HarmoDTModules", "HarmoDTImpl", "MaskUpdateSettings"]


@dataclasses.dataclass(frozen=True)
class HarmoDTModules(Modules):
    """Everything d3rlpy checkpoints: weights, masks, prompts, optimizer state."""

    transformer: MaskedDecisionTransformer
    masks: TaskMasks
    prompts: PromptBank
    optim: OptimizerWrapper


@dataclasses.dataclass(frozen=True)
class MaskUpdateSettings:
    """What the Impl reads of the config, under the config's own names (see
    ``HarmoDTConfig`` for what each means); built in one place,
    :meth:`from_config`."""

    importance: str
    harmony_gamma: float
    uses_masks: bool
    harmony_estimator: str
    harmony_dropout: bool
    harmony_leave_one_out: bool
    harmony_grad_clip: float
    score_normalization: str
    protect_1d: bool
    shared_update_masks: bool
    block_growth: bool
    gradient_surgery: str
    cagrad_c: float

    @classmethod
    def from_config(cls, config: Any) -> MaskUpdateSettings:
        """The settings of a ``HarmoDTConfig`` (read by name)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    @property
    def accumulates(self) -> bool:
        return self.uses_masks and self.harmony_estimator == "accumulated"


def _unwrap(module: nn.Module) -> MaskedDecisionTransformer:
    inner = getattr(module, "module", module)  # DDP wraps the model
    assert isinstance(inner, MaskedDecisionTransformer)
    return inner


def _all_reduce_sum(tensor: torch.Tensor) -> int:
    """Sum ``tensor`` in place over the processes of a torch.distributed run
    (identical result on every rank); returns the world size (1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    world = dist.get_world_size()
    if world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return world


class HarmoDTImpl(TransformerAlgoImplBase):
    _modules: HarmoDTModules

    def __init__(
        self,
        observation_shape: Shape,
        action_size: int,
        modules: HarmoDTModules,
        settings: MaskUpdateSettings,
        device: str,
        precision: str = "fp32",
    ):
        super().__init__(observation_shape, action_size, modules, device)
        self._settings = settings
        self._bf16 = precision == "bf16"
        self._net = _unwrap(modules.transformer)
        # forward-masked (the blocks) and every parameter a mask covers (the
        # blocks, then the shared layers' update masks): the flattened order
        self._masked: dict[str, nn.Parameter] = self._net.masked_parameters()
        self._covered: dict[str, nn.Parameter] = dict(self._masked)
        if settings.shared_update_masks:
            self._covered.update(self._net.shared_parameters())
        self._names = tuple(self._covered)
        self._shapes = {n: tuple(p.shape) for n, p in self._covered.items()}
        # (N,) entries of 1-D parameters (biases, LayerNorm gains): dropping
        # one removes a whole channel's offset or scale
        self._one_dim = self._entries(lambda n, p: p.dim() <= 1)
        # (N,) entries of the shared layers (update masks only)
        self._shared = self._entries(lambda n, p: n not in self._masked)

    def _entries(self, rule: Callable[[str, nn.Parameter], bool]) -> torch.Tensor:
        """(N,) bool over the flattened covered entries: whole parameters
        for which ``rule(name, parameter)`` holds."""
        return torch.cat(
            [
                torch.full((p.numel(),), rule(n, p), dtype=torch.bool)
                for n, p in self._covered.items()
            ]
        ).to(self.device)

    # ------------------------------------------------------------------ props
    @property
    def settings(self) -> MaskUpdateSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: MaskUpdateSettings) -> None:
        """New mask-update options for a built model (``set_mask_update``);
        the covered parameters (``shared_update_masks``) cannot change."""
        if settings.shared_update_masks != self._settings.shared_update_masks:
            raise ValueError("shared_update_masks is fixed once the model is built")
        self._settings = settings

    @property
    def modules(self) -> HarmoDTModules:
        return self._modules

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter a task mask covers (flattened order)."""
        return self._shapes

    @property
    def num_tasks(self) -> int:
        return self._modules.masks.num_tasks

    @property
    def masked_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def step(self) -> int:
        return int(self._modules.masks.step)

    def task_weights(
        self, task_ids: torch.Tensor, layout: TaskLayout | None = None
    ) -> BatchWeights:
        """θ ⊙ M_t for a batch with tasks ``task_ids`` (B,).

        Dense masks that never change (MTDT / Prompt-DT) skip the masking.
        """
        masks = self._modules.masks if self._settings.uses_masks else None
        return effective_weights(self._masked, masks, task_ids, layout)

    def forward_tasks(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        masks: torch.Tensor,
        weights: BatchWeights,
        synced: bool = True,
        prompts: PromptBank | None = None,
    ) -> torch.Tensor:
        """Predicted actions (B, L, A); ``weights`` from ``task_weights(task_ids)``.

        ``synced=False`` bypasses the DDP wrapper: for passes whose backward
        does not reach the parameters (the harmony gradients), which DDP would
        otherwise wait for at the next step.
        """
        net = self._modules.transformer if synced else self._net
        return net(  # type: ignore[no-any-return]
            observations,
            actions,
            returns_to_go,
            timesteps,
            masks,
            weights,
            self._modules.prompts if prompts is None else prompts,
        )

    def _autocast(self) -> torch.autocast:
        """bf16 autocast of the forward pass when ``precision="bf16"``
        (weights, optimizer state and the loss stay float32)."""
        device_type = torch.device(self.device).type
        return torch.autocast(device_type, torch.bfloat16, enabled=self._bf16)

    def sequence_losses(
        self,
        batch: TorchTrajectoryMiniBatch,
        weights: BatchWeights,
        synced: bool = True,
        prompts: PromptBank | None = None,
    ) -> torch.Tensor:
        """Action MSE per sequence (B,), d3rlpy's convention (sum over action
        dims, mean over all L positions, padding counted as zero)."""
        assert isinstance(batch.observations, torch.Tensor)
        with self._autocast():
            pred = self.forward_tasks(
                batch.observations,
                batch.actions,
                batch.returns_to_go,
                batch.timesteps,
                batch.masks,
                weights,
                synced,
                prompts,
            ).float()  # (B, L, A)
        err = ((pred - batch.actions) ** 2).sum(dim=-1) * batch.masks  # (B, L)
        return err.mean(dim=1)  # (B,)

    # --------------------------------------------------------------- predict
    @eval_api
    def predict_task(self, inpt: TorchTransformerInput, task_id: int) -> torch.Tensor:
        """Action (A,) for the last step of ``inpt``, acting as task ``task_id``."""
        return self._predict_task(inpt, task_id)

    def _predict_task(self, inpt: TorchTransformerInput, task_id: int) -> torch.Tensor:
        assert isinstance(inpt.observations, torch.Tensor)
        task_ids = torch.full((1,), task_id, dtype=torch.long, device=self.device)
        with self._autocast():
            action = self.forward_tasks(
                inpt.observations,
                inpt.actions,
                inpt.returns_to_go,
                inpt.timesteps,
                inpt.masks,
                self.task_weights(task_ids),
                synced=False,
            )  # (1, L, A)
        return action[0][-1].float()

    def inner_predict(self, inpt: TorchTransformerInput) -> torch.Tensor:
        if self.num_tasks != 1:
            raise ValueError(
                "this model has several tasks: predict through a task-bound view, "
                "e.g. algo.for_task('reach-v3').predict(...)"
            )
        return self._predict_task(inpt, 0)

    # ---------------------------------------------------------------- update
    @train_api
    def update_tasks(
        self,
        batch: TorchTrajectoryMiniBatch,
        task_ids: torch.Tensor,
        layout: TaskLayout | None = None,
    ) -> dict[str, float]:
        """One optimizer step on sequences of the given tasks (B,); ``layout``
        (from the host) spares the device a sync."""
        return self._update_tasks(batch, task_ids, layout)

    def _update_tasks(
        self,
        batch: TorchTrajectoryMiniBatch,
        task_ids: torch.Tensor,
        layout: TaskLayout | None = None,
    ) -> dict[str, float]:
        optim = self._modules.optim
        optim.zero_grad()
        weights = self.task_weights(task_ids, layout)
        accumulate = self._settings.accumulates
        if accumulate:
            for name in self._masked:  # the effective weights' gradient, same backward
                weights.tensors[name].retain_grad()
        if self._settings.gradient_surgery != "none" and weights.unique.numel() > 1:
            per_seq = self._surgery_backward(batch, weights)
            loss = per_seq.mean()
        else:
            per_seq = self.sequence_losses(batch, weights)
            loss = per_seq.mean()
            loss.backward()
        if accumulate:
            self._accumulate(weights, per_seq.shape[0])
        if self._settings.uses_masks and isinstance(optim, MaskedOptimizerWrapper):
            union = self._modules.masks.union(weights.unique)
            optim.set_trainable_entries(
                {self._covered[n]: union[n] for n in self._names}
            )
        optim.step()
        self._modules.masks.step += 1
        metrics = {"loss": float(loss.detach())}
        per_task = torch.zeros(self.num_tasks, device=per_seq.device).index_add_(
            0, task_ids, per_seq.detach()
        )
        counts = torch.bincount(task_ids, minlength=self.num_tasks)
        for t in torch.nonzero(counts).flatten().tolist():
            metrics[f"task_loss/{t}"] = float(per_task[t] / counts[t])
        return metrics

    def _surgery_backward(
        self, batch: TorchTrajectoryMiniBatch, weights: BatchWeights
    ) -> torch.Tensor:
        """Each task's mean-loss gradient (one backward pass per task),
        averaged over processes, combined by the configured surgery and set
        as the parameters' ``.grad``; returns the per-sequence losses (B,).

        The forward bypasses DDP (its reducer expects one backward); the
        per-task gradients are all-reduced here instead, so every process
        combines the same global gradients.
        """
        per_seq = self.sequence_losses(batch, weights, synced=False)  # (B,)
        params = [p for p in self._net.parameters() if p.requires_grad]
        num = weights.unique.numel()
        rows = []
        for u in range(num):
            task_loss = per_seq[weights.inverse == u].mean()
            grads = torch.autograd.grad(
                task_loss, params, retain_graph=u < num - 1, allow_unused=True
            )
            rows.append(
                torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).reshape(-1)
                        for g, p in zip(grads, params, strict=True)
                    ]
                )
            )
        task_grads = torch.stack(rows)  # (U, P)
        task_grads /= _all_reduce_sum(task_grads)  # the mean over processes
        generator = torch.Generator().manual_seed(int(self._modules.masks.step))
        update = surgery.combine(
            self._settings.gradient_surgery,
            task_grads,
            generator,
            self._settings.cagrad_c,
        )  # (P,)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = update[offset : offset + n].view_as(p).clone()
            offset += n
        return per_seq

    def _accumulate(self, weights: BatchWeights, batch_size: int) -> None:
        """Add each task's own mean-loss gradient w.r.t. θ⊙M_t to its running sum.

        The batch loss is the mean over B sequences, so the gradient of task
        u's effective weights is (n_u / B) × the gradient of task u's own mean
        loss; rescaling by B / n_u gives the latter.
        """
        with torch.no_grad():
            rows = []
            for name in self._names:
                if name in self._masked:
                    grad = weights.tensors[name].grad
                else:  # a shared layer: its own gradient (one task per step)
                    if weights.unique.numel() != 1:
                        raise ValueError(
                            "shared update masks accumulate one task per step"
                        )
                    grad = self._covered[name].grad
                assert grad is not None
                rows.append(grad.reshape(weights.unique.numel(), -1))  # (U, n_l)
            grads = torch.cat(rows, dim=1)  # (U, N)
            counts = torch.bincount(weights.inverse, minlength=weights.unique.numel())
            grads *= (batch_size / counts.to(grads.dtype)).unsqueeze(1)
            self._modules.masks.accumulate(weights.unique, grads)

    def inner_update(
        self, batch: TorchTrajectoryMiniBatch, grad_step: int
    ) -> dict[str, float]:
        # d3rlpy's single-batch API: round-robin task by step
        batch_size = batch.actions.shape[0]
        task = round_robin_task(grad_step, self.num_tasks)
        task_ids = torch.full((batch_size,), task, dtype=torch.long, device=self.device)
        return self._update_tasks(batch, task_ids)

    # ----------------------------------------------------------- mask update
    @train_api
    def task_gradients(
        self, batches: Sequence[TorchTrajectoryMiniBatch]
    ) -> torch.Tensor:
        """Gradient of each task's loss w.r.t. its *effective* weights θ⊙M_t.

        (T, N). Unlike the gradient w.r.t. θ (zero wherever M_t is 0), this is
        defined at inactive entries too, so growth is scored, not blind. The
        shared layers (update masks) run unmasked: their gradient is w.r.t. θ.
        """
        net = self._net
        was_training = net.training
        net.train(self._settings.harmony_dropout)  # dropout off: a less noisy estimate
        rows = []
        for t, batch in enumerate(batches):
            ids = torch.full(
                (batch.actions.shape[0],), t, dtype=torch.long, device=self.device
            )
            weights = effective_weights(self._masked, self._modules.masks, ids)
            loss = self.sequence_losses(batch, weights, synced=False).mean()
            targets = [
                weights.tensors[n] if n in self._masked else self._covered[n]
                for n in self._names
            ]
            grads = torch.autograd.grad(loss, targets)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        net.train(was_training)
        return torch.stack(rows)  # (T, N)

    def mean_task_gradients(
        self, batches: Sequence[TorchTrajectoryMiniBatch]
    ) -> torch.Tensor:
        """:meth:`task_gradients` averaged over the processes of a
        torch.distributed run (unchanged without one): (T, N), the same on
        every rank."""
        grads = self.task_gradients(batches)  # (T, N), this rank's batches
        grads /= _all_reduce_sum(grads)  # in place: the mean over ranks
        return grads

    @torch.no_grad()
    def learned_masks(
        self, batches: Sequence[TorchTrajectoryMiniBatch], densities: dict[str, float]
    ) -> None:
        """Each task's mask chosen from its gradients at the current weights:
        per layer, the entries with the largest connection sensitivity
        ``|θ ⊙ g_t|`` (SNIP, Lee et al. 2019) at the layer's density, with
        ``g_t`` taken on the dense model (every entry active)."""
        masks = self._modules.masks
        masks.assign({n: torch.ones_like(m) for n, m in masks.as_dict().items()})
        with torch.enable_grad():
            grads = self.mean_task_gradients(batches)  # (T, N)
        theta = torch.cat(
            [self._covered[n].detach().reshape(-1) for n in self._names]
        )  # (N,)
        scores = (grads * theta.unsqueeze(0)).abs()  # (T, N)
        chosen = mask_ops.top_entries(scores, self._shapes, densities, self._names)
        masks.assign(mask_ops.unflatten_masks(chosen, self._shapes, self._names))

    def update_masks(
        self,
        swap_counts: torch.Tensor,
        generator: torch.Generator,
        batches: Sequence[TorchTrajectoryMiniBatch] | None = None,
    ) -> dict[str, float]:
        """Drop conflicting, grow harmonious entries; density is preserved.

        ``swap_counts``: (T,) entries to drop (and grow) per task.
        ``batches``: one fresh batch per task (in task order) for the
        ``batch`` estimator; the ``accumulated`` estimator uses the running
        means of the training gradients instead (and resets them).
        """
        settings = self._settings
        masks = self._modules.masks
        if settings.harmony_estimator == "accumulated":
            # every rank's rows count: Σ sums / Σ counts over all processes
            _all_reduce_sum(masks.grad_sum)
            _all_reduce_sum(masks.grad_count)
            grads, valid = masks.mean_gradients()  # (T, N), (T,)
            masks.reset_accumulator()
        else:
            if batches is None:
                raise ValueError("the batch estimator needs one batch per task")
            grads = self.mean_task_gradients(batches)  # (T, N)
            valid = torch.ones(grads.shape[0], dtype=torch.bool, device=grads.device)
        with torch.no_grad():
            old = mask_ops.flatten_masks(masks.as_dict(), self._names)
            new, harmony = self.propose_masks(grads, valid, swap_counts, generator)
            masks.assign(mask_ops.unflatten_masks(new, self._shapes, self._names))
            dropped = torch.count_nonzero(old & ~new, dim=1)  # (T,)
            masks.changed += dropped.to(masks.changed.device)
            unit = torch.nn.functional.normalize(grads[valid], dim=1)
            cos = unit @ unit.T  # (V, V)
            num_valid = unit.shape[0]
            off = ~torch.eye(num_valid, dtype=torch.bool, device=cos.device)
            conflict = float(cos[off].mean()) if num_valid > 1 else 1.0
            return {
                "mask_changed": float(torch.count_nonzero(new != old)),
                # a masked sum, not harmony[old]: no (T, N) gather
                "harmony_mean": float(
                    torch.where(old, harmony, 0.0).sum() / torch.count_nonzero(old)
                ),
                "grad_cosine": conflict,
                "mask_density": float(new.float().mean()),
            }

    @torch.no_grad()
    def propose_masks(
        self,
        grads: torch.Tensor,
        valid: torch.Tensor,
        swap_counts: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks one update would produce from task gradients, unapplied.

        ``grads`` (T, N) w.r.t. the effective weights, ``valid`` (T,) tasks
        that have one. Returns the new (T, N) masks and the harmony scores.
        Separate from ``update_masks`` so the estimator benchmark can score
        two estimates against each other without touching the model.
        """
        settings = self._settings
        grads = mask_ops.clip_task_gradients(
            grads, settings.harmony_grad_clip
        )  # (T, N)
        harmony = mask_ops.harmony_scores(
            grads, leave_one_out=settings.harmony_leave_one_out, valid=valid
        )  # (T, N)
        theta = torch.cat(
            [self._covered[n].detach().reshape(-1) for n in self._names]
        )  # (N,)
        importance = mask_ops.importance_scores(
            settings.importance, grads, theta, generator
        )  # (T, N)
        drop = settings.harmony_gamma * mask_ops.normalize_scores(
            settings.score_normalization, harmony
        ) + mask_ops.normalize_scores(settings.score_normalization, importance)
        old = self.flat_masks()
        counts = swap_counts.to(old.device) * valid  # no gradient, no change
        new = mask_ops.drop_and_grow(
            old,
            drop,
            harmony,
            counts,
            protected=self.protected_entries(),
            growable=None if settings.block_growth else self._shared,
        )
        return new, harmony

    @property
    def forward_entries(self) -> torch.Tensor:
        """(N,) bool: covered entries masked in the forward pass (the blocks);
        the rest are the shared layers' update masks."""
        return ~self._shared

    def protected_entries(self) -> torch.Tensor | None:
        """(N,) bool entries never dropped (1-D parameters), or None."""
        return self._one_dim if self._settings.protect_1d else None

    def mask_turnover(self) -> torch.Tensor:
        """(T,) float64: entries each task dropped so far over its active count
        (drop-and-grow keeps the count; prune-free, so this is the turnover)."""
        masks = self._modules.masks
        active = self.flat_masks().sum(dim=1, dtype=torch.float64)  # (T,)
        return masks.changed.to(torch.float64) / active.clamp(min=1.0)

    def flat_masks(self) -> torch.Tensor:
        """(T, N) bool view of all masks, in ``masked_names`` order."""
        return mask_ops.flatten_masks(self._modules.masks.as_dict(), self._names)
