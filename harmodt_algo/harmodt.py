"""HarmoDT as a d3rlpy algorithm: Config → Algo (Impl in ``impl.py``).

``HarmoDT(...).fit(minari_dataset)`` trains one Decision Transformer for many
tasks, each through its own binary mask over the shared block weights; every
``mask_interval`` steps the masks are rewired by the harmony score (design §6).
The same class with dense, frozen masks is MTDT, and with prompts Prompt-DT
(see ``presets``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from d3rlpy.algos.transformer import (
    TransformerAlgoBase,
    TransformerConfig,
)
from d3rlpy.algos.transformer.action_samplers import TransformerActionSampler
from d3rlpy.algos.transformer.inputs import TorchTransformerInput, TransformerInput
from d3rlpy.algos.utility import (
    assert_action_space_with_dataset,
    build_scalers_with_trajectory_slicer,
)
from d3rlpy.base import DeviceArg, register_learnable
from d3rlpy.constants import ActionSpace
from d3rlpy.dataset import TrajectoryMiniBatch
from d3rlpy.logging import LoggerAdapterFactory
from d3rlpy.optimizers import OptimizerFactory, make_optimizer_field
from d3rlpy.optimizers.lr_schedulers import WarmupSchedulerFactory
from d3rlpy.preprocessing import (
    MultiplyRewardScaler,
    ObservationScaler,
    RewardScaler,
    StandardObservationScaler,
    make_observation_scaler_field,
    make_reward_scaler_field,
)
from d3rlpy.torch_utility import TorchTrajectoryMiniBatch, wrap_model_by_ddp
from d3rlpy.types import GymEnv, NDArray, Shape
from typing_extensions import Self

from . import masks as mask_ops
from .config_checks import (
    ACCUMULATOR_DTYPES,
    MASK_UPDATE_FIELDS,
    mask_update_settings,
    validate_config,
)
from .data import MultiTaskDataset, as_multitask_dataset
from .export import save_task_policy
from .fit_loop import FitLoop, FitOptions, process, step_seed
from .impl import HarmoDTImpl, HarmoDTModules, MaskUpdateSettings
from .naming import metric_key
from .networks import (
    MaskedDecisionTransformer,
    PromptBank,
    TaskLayout,
    TaskMasks,
)
from .optimizer import MaskedAdamWFactory
from .presets import PRESETS
from .scaling import scale_inputs
from .task_view import HarmoDTTaskView

__all__ = [
    "HarmoDTConfig",
    "HarmoDT",
    "HarmoDTTaskView",
    "PRESETS",
    "MASK_UPDATE_FIELDS",
    "mask_update_settings",
    "step_seed",
]


def _default_optim() -> OptimizerFactory:
    # the release: AdamW lr 1e-4, wd 1e-4, clip 0.25, linear warm-up
    return MaskedAdamWFactory(
        weight_decay=1e-4,
        clip_grad_norm=0.25,
        lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=1000),
    )


def _with_default(make_field: Callable[[], Any], factory: Callable[[], Any]) -> Any:
    """A d3rlpy serialisable config field with a non-trivial default."""
    field = make_field()
    return dataclasses.field(metadata=field.metadata, default_factory=factory)


@dataclasses.dataclass()
class HarmoDTConfig(TransformerConfig):
    """Config of HarmoDT (Harmony Multi-Task Decision Transformer).

    References:
        * Hu et al., HarmoDT: Harmony Multi-Task Decision Transformer for
          Offline Reinforcement Learning. ICML 2024 (arXiv 2405.18080).

    Architecture: ``embed_size``, ``num_layers``, ``num_heads``, ``ff_size``
    (0 → 4·embed), dropouts, ``activation_type``, ``context_size`` K,
    ``max_timestep`` (≥ the longest episode; Meta-World: 500).
    ``prompt_length``: Prompt-DT trajectory prompt steps per task (0 = none).

    Masks: ``mask_init`` (erk | uniform | dense), ``sparsity`` (1 − density),
    ``mask_interval`` steps between mask updates (0 = masks never change).

    How many entries an update rewires per task: ``change_count`` k_max > 0
    is an absolute count (the release: 100, one top-k over the flattened
    masked parameters), else ``change_fraction`` f of the task's active
    entries; either at the peak of the ``change_schedule`` (cosine:
    ⌊k_max·sin²(π s/S)⌋ or ⌊f·n·sin²(π s/S)⌋; constant: k_max or ⌊f·n⌋).

    Which entries (design §6): drop the k active entries with the lowest
    ``harmony_gamma``·norm(h_t) + norm(importance_t) and grow the k inactive
    ones with the highest h_t = ḡ ⊙ g_t, where g_t is task t's gradient with
    respect to its *effective* weights θ⊙M_t and

    - ``harmony_estimator``: ``batch`` computes g_t on a fresh batch of
      ``mask_batch_size`` sequences per task at update time (dropout on if
      ``harmony_dropout``, as the release); ``accumulated`` uses the running
      mean of the training gradients of task t since its last mask update,
      taken from the training step's own backward pass (no extra pass; state
      T × N floats of ``accumulator_dtype``, saved with the model);
    - ``harmony_leave_one_out``: ḡ excludes g_t (else it includes it, as the
      release);
    - ``harmony_grad_clip`` c > 0: each g_t is scaled to norm ≤ c before the
      consensus (the release: 0.25);
    - ``importance``: fisher g_t² | magnitude |θ| | random;
    - ``score_normalization``: none | rank (rank/(N−1) per task) | scale
      (x / median|x| per task), applied to both drop terms so that γ weighs
      them the same for every importance kind;
    - ``protect_1d``: 1-D parameters (biases, LayerNorm gains) are never
      dropped;
    - ``shared_update_masks``: the layers outside the blocks (embeddings,
      LayerNorms outside the blocks, the action head) get per-task *update*
      masks, as the release's embeddings and heads: every task runs them
      whole, but a task's step only moves its own entries of them, and those
      entries take part in the same drop and grow (one top-k over blocks and
      shared layers; ERK over both). Exact under ``round_robin``; in a mixed
      batch an entry moves when any of the batch's tasks holds it;
    - ``block_growth``: False makes the blocks prune-only (what the release
      does in effect, design §6): entries are dropped anywhere but grown only
      in the shared layers, so block density falls over the run.

    Training: ``task_schedule`` round_robin (one task per step, as the
    release) or mixed (balanced tasks in every batch); ``gradient_surgery``
    none (the mean of the task losses), pcgrad or cagrad (with ``cagrad_c``):
    one gradient per task of a mixed batch, combined by
    :mod:`harmodt_algo.surgery`; ``precision`` fp32 or
    bf16 (autocast of the forward pass; weights, optimizer and loss stay
    float32); ``compile_graph`` is rejected (see ``validate``); ``seed`` makes
    sampling, dropout and mask draws reproducible and resumable.
    ``task_names`` is set by ``fit`` (the model's task order);
    ``task_datasets`` maps a task to the Minari dataset id it was trained or
    adapted on, where that is known (``fit`` on Minari datasets records it;
    ``harmodt adapt`` too), so a model file says where its tasks came from.
    """

    batch_size: int = 64
    learning_rate: float = 1e-4
    optim_factory: OptimizerFactory = _with_default(
        make_optimizer_field, _default_optim
    )
    observation_scaler: ObservationScaler | None = _with_default(
        make_observation_scaler_field, StandardObservationScaler
    )
    reward_scaler: RewardScaler | None = _with_default(
        make_reward_scaler_field, lambda: MultiplyRewardScaler(0.001)
    )
    context_size: int = 20
    max_timestep: int = 1000
    embed_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    ff_size: int = 0
    attn_dropout: float = 0.1
    resid_dropout: float = 0.1
    embed_dropout: float = 0.1
    activation_type: str = "relu"
    prompt_length: int = 5
    mask_init: str = "erk"
    sparsity: float = 0.2
    mask_interval: int = 500
    change_fraction: float = 0.02
    change_count: int = 0
    change_schedule: str = "cosine"
    importance: str = "fisher"
    harmony_gamma: float = 10.0
    harmony_estimator: str = "batch"
    mask_batch_size: int = 16
    harmony_dropout: bool = True
    harmony_leave_one_out: bool = False
    harmony_grad_clip: float = 0.0
    score_normalization: str = "none"
    protect_1d: bool = True
    shared_update_masks: bool = False
    block_growth: bool = True
    accumulator_dtype: str = "float32"
    task_schedule: str = "round_robin"
    gradient_surgery: str = "none"
    cagrad_c: float = 0.5
    precision: str = "fp32"
    seed: int = 0
    task_names: list[str] = dataclasses.field(default_factory=list)
    task_datasets: dict[str, str] = dataclasses.field(default_factory=dict)

    def create(self, device: DeviceArg = False, enable_ddp: bool = False) -> HarmoDT:
        return HarmoDT(self, device, enable_ddp)

    @staticmethod
    def get_type() -> str:
        return "harmodt"

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> HarmoDTConfig:
        """A named preset (:data:`harmodt_algo.presets.PRESET_RECORDS`: the
        README's table lists each with what it is), ``overrides`` on top."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(
                f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[key], **overrides})

    @property
    def uses_masks(self) -> bool:
        """False for dense masks that never change: the mask path is skipped."""
        return not (self.mask_init == "dense" and self.mask_interval == 0)

    def validate(self) -> None:
        """Fail fast with the valid choices, before anything is built."""
        validate_config(self)


def _minari_id(source: Any) -> str | None:
    """The dataset id of a MinariDataset (None for anything else)."""
    spec = getattr(source, "spec", None)
    ident = getattr(spec, "dataset_id", None)
    return ident if isinstance(ident, str) else None


def _density_kind(mask_init: str) -> str:
    """The per-layer densities of a mask start (a learned start uses ERK's
    and is drawn until the data chooses it)."""
    return "erk" if mask_init == "learned" else mask_init


def _mask_covered(
    net: MaskedDecisionTransformer, config: HarmoDTConfig
) -> dict[str, torch.nn.Parameter]:
    """Every parameter a task mask covers: the blocks (forward masks) and,
    with ``shared_update_masks``, the shared layers (update masks)."""
    covered = dict(net.masked_parameters())
    if config.shared_update_masks:
        covered.update(net.shared_parameters())
    return covered


def _require_all(names: Sequence[str], within: Sequence[str], message: str) -> None:
    """ValueError with ``message`` (its ``{}``: the missing names) unless every
    one of ``names`` is in ``within``."""
    missing = [n for n in names if n not in within]
    if missing:
        raise ValueError(message.format(missing))


#: Config fields passed to :class:`MaskedDecisionTransformer` under their name.
_NETWORK_FIELDS = (
    "embed_size",
    "num_layers",
    "num_heads",
    "context_size",
    "max_timestep",
    "prompt_length",
    "attn_dropout",
    "resid_dropout",
    "embed_dropout",
    "activation_type",
)


class HarmoDT(TransformerAlgoBase[HarmoDTImpl, HarmoDTConfig]):
    """Harmony Multi-Task Decision Transformer (d3rlpy algorithm).

    .. code-block:: python

        import minari
        from harmodt_algo import HarmoDT

        algo = HarmoDT().fit(minari.load_dataset("metaworld-v3/mt5/near-optimal-v0"),
                             n_steps=10_000)
        actor = algo.for_task("reach-v3").as_stateful_wrapper(target_return=4500)
    """

    def __init__(
        self,
        config: HarmoDTConfig | None = None,
        device: DeviceArg = False,
        enable_ddp: bool = False,
        impl: HarmoDTImpl | None = None,
    ):
        config = HarmoDTConfig() if config is None else config
        config.validate()
        if enable_ddp and not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "enable_ddp=True needs a torch.distributed process group: launch "
                "with torchrun and call d3rlpy.distributed.init_process_group("
                "'gloo' or 'nccl') before building HarmoDT"
            )
        super().__init__(config, device, enable_ddp, impl)
        self._last_fit: FitLoop | None = None

    @property
    def epoch_metrics(self) -> list[tuple[int, dict[str, float]]]:
        """The last ``fit``'s ``(epoch, metrics)`` pairs: the epoch means it
        logged (losses, ``time_step``, evaluator results). d3rlpy 2.8's
        transformer ``fit`` returns None; ours returns ``self`` so that
        ``algo = HarmoDT(...).fit(ds)`` works, and keeps the means here."""
        fit = self._last_fit
        return [(e, dict(m)) for e, m in fit.epoch_metrics] if fit else []

    @property
    def last_step_metrics(self) -> dict[str, float]:
        """The metrics ``fit`` logged for its latest step (its timings aside),
        for a ``callback``: one that checkpoints mid-epoch keeps them, so that
        a resumed fit's epoch means equal an uninterrupted one's."""
        return dict(self._last_fit.last_step_metrics) if self._last_fit else {}

    @classmethod
    def from_preset(
        cls, name: str, device: DeviceArg = False, **overrides: Any
    ) -> HarmoDT:
        return cls(HarmoDTConfig.from_preset(name, **overrides), device)

    # ------------------------------------------------------------- building
    def inner_create_impl(self, observation_shape: Shape, action_size: int) -> None:
        cfg = self._config
        if not cfg.task_names:
            raise ValueError(
                "HarmoDT needs its task list before building: call fit(dataset), "
                "or set HarmoDTConfig(task_names=[...]) to build without data"
            )
        if not isinstance(observation_shape, Sequence) or len(observation_shape) != 1:
            raise ValueError(
                f"HarmoDT supports flat vector observations; got shape "
                f"{observation_shape}"
            )
        obs_size = int(observation_shape[0])  # type: ignore[arg-type]
        num_tasks = len(cfg.task_names)
        # initial weights are a function of the config's seed, not of whatever
        # state torch's global RNG happens to be in
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = self._build_network(obs_size, action_size)
        shapes = {n: tuple(p.shape) for n, p in _mask_covered(net, cfg).items()}
        accumulates = cfg.uses_masks and cfg.harmony_estimator == "accumulated"
        task_masks = TaskMasks(
            shapes,
            num_tasks,
            accumulate_entries=sum(math.prod(s) for s in shapes.values())
            if accumulates
            else 0,
            accumulate_dtype=ACCUMULATOR_DTYPES[cfg.accumulator_dtype],
        ).to(self._device)
        task_masks.step.fill_(super().grad_step)  # a set_grad_step before building
        densities = mask_ops.layer_densities(
            _density_kind(cfg.mask_init), shapes, 1.0 - cfg.sparsity
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        task_masks.assign(
            mask_ops.sample_masks(shapes, densities, num_tasks, generator)
        )
        prompts = PromptBank(num_tasks, cfg.prompt_length, obs_size, action_size).to(
            self._device
        )
        optim = cfg.optim_factory.create(
            net.named_modules(), lr=cfg.learning_rate, compiled=False
        )
        transformer = wrap_model_by_ddp(net) if self._enable_ddp else net
        modules = HarmoDTModules(
            transformer=transformer, masks=task_masks, prompts=prompts, optim=optim
        )
        self._impl = HarmoDTImpl(
            observation_shape=observation_shape,
            action_size=action_size,
            modules=modules,
            settings=self._mask_settings(),
            device=self._device,
            precision=cfg.precision,
        )

    def _mask_settings(self) -> MaskUpdateSettings:
        return MaskUpdateSettings.from_config(self._config)

    def set_mask_update(self, **options: Any) -> None:
        """Change mask-update options of a built model (e.g. to score a
        trained model differently); the estimator and masks' shape stay."""
        fixed = {
            "harmony_estimator",
            "mask_init",
            "sparsity",
            "accumulator_dtype",
            "shared_update_masks",
        }
        bad = sorted(set(options) - set(MASK_UPDATE_FIELDS) | set(options) & fixed)
        if bad:
            raise ValueError(
                f"cannot change {bad} on a built model; changeable: "
                f"{sorted(set(MASK_UPDATE_FIELDS) - fixed)}"
            )
        updated = dataclasses.replace(self._config, **options)
        updated.validate()
        for key, value in options.items():
            setattr(self._config, key, value)
        if self._impl is not None:
            self._impl.settings = self._mask_settings()

    def _build_network(
        self, obs_size: int, action_size: int
    ) -> MaskedDecisionTransformer:
        cfg = self._config
        same_name: dict[str, Any] = {k: getattr(cfg, k) for k in _NETWORK_FIELDS}
        return MaskedDecisionTransformer(
            observation_size=obs_size,
            action_size=action_size,
            ff_size=cfg.ff_size or 4 * cfg.embed_size,
            **same_name,
        ).to(self._device)

    def get_action_type(self) -> ActionSpace:
        return ActionSpace.CONTINUOUS

    # ---------------------------------------------------------------- tasks
    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self._config.task_names)

    @property
    def grad_step(self) -> int:
        """Optimizer steps taken so far (saved with the model, so resumable)."""
        return self._impl.step if self._impl else super().grad_step

    def set_grad_step(self, grad_step: int) -> None:
        """Set the step counter (d3rlpy's API): the schedules and the per-step
        sampling seeds read it, so this is also how a run is positioned."""
        if grad_step < 0:
            raise ValueError(f"grad_step must be >= 0, got {grad_step}")
        super().set_grad_step(grad_step)
        if self._impl is not None:
            self._impl.modules.masks.step.fill_(grad_step)

    def task_index(self, task: str | int) -> int:
        names = self.task_names
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if 0 <= int(task) < len(names):
                return int(task)
            raise ValueError(f"task index {task} out of range for {len(names)} tasks")
        if task not in names:
            raise ValueError(f"unknown task {task!r}; known tasks: {list(names)}")
        return names.index(str(task))

    def add_task(
        self,
        name: str,
        demos: Any,
        method: str = "vote",
        threshold: float = 0.5,
        steps: int = 300,
        learning_rate: float | None = None,
    ) -> HarmoDT:
        """Teach the trained model a task it never trained on, from a few
        demonstrations (anything ``fit`` accepts); returns ``self``.

        ``method``: ``vote`` (mask = entries used by ≥ ``threshold`` of the
        trained tasks, prompt from the demos), ``tune`` (``vote``, then
        ``steps`` Adam steps on the new task's prompt only; shared weights and
        other tasks untouched), ``prompt`` (Prompt-DT: all-ones mask, the
        demos' prompt), ``zero-shot`` (MTDT: all-ones mask, no prompt),
        ``finetune`` (the upper reference: ``vote``'s mask, then ``steps``
        Adam steps on every shared weight and the prompt; the trained tasks
        may change). ``learning_rate``: ``tune`` 1e-3, ``finetune`` the
        training rate, unless given. See ``harmodt_algo.adapt``. The new task then works
        everywhere a trained one does: ``for_task``, the evaluator,
        ``save``/``load_learnable``, ``save_policy``.
        """
        from .adapt import add_task

        return add_task(
            self,
            name,
            demos,
            method=method,
            threshold=threshold,
            steps=steps,
            learning_rate=learning_rate,
            seed=self._config.seed,
        )

    def replace_task_state(
        self, task_names: Sequence[str], masks: TaskMasks, prompts: PromptBank
    ) -> None:
        """Swap in masks and prompts for a new task list (same shared weights
        and optimizer): the Impl is rebuilt so that d3rlpy's checkpointer
        saves the new buffers."""
        impl = self._impl
        assert impl is not None
        if masks.num_tasks != len(task_names) or prompts.observations.shape[0] != len(
            task_names
        ):
            raise ValueError("masks and prompts must have one row per task")
        self._config.task_names = list(task_names)
        modules = dataclasses.replace(impl.modules, masks=masks, prompts=prompts)
        self._impl = HarmoDTImpl(
            observation_shape=impl.observation_shape,
            action_size=impl.action_size,
            modules=modules,
            settings=self._mask_settings(),
            device=self._device,
            precision=self._config.precision,
        )

    def for_task(self, task: str | int) -> HarmoDTTaskView:
        """A single-task view that acts like d3rlpy's ``DecisionTransformer``."""
        if self._impl is None:
            raise RuntimeError("the model is not built yet: fit() or load it first")
        return HarmoDTTaskView(self, self.task_index(task))

    # -------------------------------------------------------------- predict
    def predict(self, inpt: TransformerInput, task: str | int | None = None) -> NDArray:
        """Action for the last step of ``inpt`` as ``task`` (required when the
        model has several tasks; use ``for_task`` for d3rlpy's interface)."""
        assert self._impl is not None, "the model is not built yet"
        if task is None:
            if len(self.task_names) != 1:
                raise ValueError(
                    "predict needs task= for a multi-task model; known tasks: "
                    f"{list(self.task_names)}"
                )
            task = 0
        index = self.task_index(task)
        _check_finite(inpt)
        with torch.no_grad():
            torch_inpt = TorchTransformerInput.from_numpy(
                inpt=inpt,
                context_size=self._config.context_size,
                device=self._device,
                observation_scaler=self._config.observation_scaler,
                action_scaler=self._config.action_scaler,
                reward_scaler=self._config.reward_scaler,
            )
            action = self._impl.predict_task(torch_inpt, index)
            if self._config.action_scaler:
                action = self._config.action_scaler.reverse_transform(action)
        return action.cpu().numpy()  # type: ignore[no-any-return]

    # --------------------------------------------------------------- export
    def save_policy(self, fname: str, task: str | int | None = None) -> None:
        """Export ``task``'s greedy policy as TorchScript (.pt) or ONNX (.onnx),
        d3rlpy's ``save_policy`` with the task's mask and prompt baked in
        (``task`` is required when the model has several tasks; see also
        ``for_task(name).save_policy``). Inputs: the last K observations,
        actions, returns-to-go (unscaled) and timesteps; output: the action."""
        if task is None:
            if len(self.task_names) != 1:
                raise ValueError(
                    "save_policy needs task= for a multi-task model (or "
                    "algo.for_task(name).save_policy(...)); known tasks: "
                    f"{list(self.task_names)}"
                )
            task = 0
        save_task_policy(self, fname, self.task_index(task))

    # --------------------------------------------------------------- update
    def update(
        self,
        batch: TrajectoryMiniBatch,
        task_ids: NDArray | Sequence[int] | None = None,
    ) -> dict[str, float]:
        """One gradient step. ``task_ids`` (B,) says which task each sequence
        belongs to; without it the step's task follows round-robin."""
        assert self._impl is not None, "the model is not built yet"
        torch_batch = self._to_torch(batch)
        if task_ids is None:
            metrics = self._impl.update(torch_batch, self.grad_step)
        else:
            host = np.asarray(task_ids)
            if host.shape != (batch.actions.shape[0],):
                raise ValueError(
                    f"task_ids must have shape ({batch.actions.shape[0]},), "
                    f"got {tuple(host.shape)}"
                )
            ids = torch.as_tensor(host, dtype=torch.long, device=self._device)
            layout = TaskLayout.from_ids(host, self._device)  # no device sync
            metrics = self._impl.update_tasks(torch_batch, ids, layout)
        self._grad_step = self.grad_step
        return self._name_task_metrics(metrics)

    def _name_task_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for key, value in metrics.items():
            if key.startswith("task_loss/"):
                key = metric_key("loss", self.task_names[int(key.split("/")[1])])
            out[key] = value
        return out

    def _to_torch(self, batch: TrajectoryMiniBatch) -> TorchTrajectoryMiniBatch:
        return TorchTrajectoryMiniBatch.from_batch(
            batch=batch,
            device=self._device,
            observation_scaler=self._config.observation_scaler,
            action_scaler=self._config.action_scaler,
            reward_scaler=self._config.reward_scaler,
        )

    def swap_counts(self, step: int) -> torch.Tensor:
        """(T,) entries each task drops (and grows) at ``step``: the change
        schedule (``masks.swap_count``) over each task's active entries."""
        assert self._impl is not None
        cfg = self._config
        active = self._impl.flat_masks().sum(dim=1)  # (T,)
        horizon = max(int(self._impl.modules.masks.schedule_horizon), 1)
        counts = [
            mask_ops.swap_count(
                cfg.change_schedule,
                step,
                horizon,
                cfg.change_fraction,
                n,
                peak=cfg.change_count,
            )
            for n in active.tolist()
        ]
        return torch.tensor(counts, dtype=torch.long)

    def update_masks(self, dataset: MultiTaskDataset, step: int) -> dict[str, float]:
        """The outer loop: harmony-score drop and grow (fresh per-task batches
        for the ``batch`` estimator, running means for ``accumulated``)."""
        assert self._impl is not None
        cfg = self._config
        rng = np.random.default_rng(step_seed(cfg.seed, step, 1))
        self._check_covers_all_tasks(dataset)
        batches = None
        rank, world = process()
        if cfg.harmony_estimator == "batch":
            batches = []
            size = cfg.mask_batch_size  # per rank, like batch_size
            for name in self.task_names:  # model task order
                ids = np.full(size * world, dataset.task_names.index(name))
                rows = slice(rank * size, (rank + 1) * size)
                batches.append(
                    self._to_torch(
                        dataset.sample_batch(ids, cfg.context_size, rng, rows)
                    )
                )
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return self._impl.update_masks(self.swap_counts(step), generator, batches)

    def _check_covers_all_tasks(self, dataset: MultiTaskDataset) -> None:
        """Mask updates compare every task's gradient: all need data."""
        _require_all(
            self.task_names,
            dataset.task_names,
            "mask updates need data for every task of the model; the dataset has "
            "none for {}. Fit on all tasks, or set mask_interval=0",
        )

    # ------------------------------------------------------------------ fit
    def _dataset_task_index(self, dataset: MultiTaskDataset) -> NDArray:
        """Model task index of each dataset task (dataset order)."""
        _require_all(
            dataset.task_names,
            self.task_names,
            "the dataset has tasks this model does not know: {}; model tasks: "
            + str(list(self.task_names)),
        )
        return np.array([self.task_names.index(n) for n in dataset.task_names])

    def _prepare(self, dataset: MultiTaskDataset) -> None:
        """Task list, scalers, model and prompts from the data (first fit only)."""
        cfg = self._config
        if dataset.max_episode_length > cfg.max_timestep:
            raise ValueError(
                f"the dataset has episodes of {dataset.max_episode_length} steps but "
                f"max_timestep is {cfg.max_timestep}; set "
                f"HarmoDTConfig(max_timestep>={dataset.max_episode_length})"
            )
        if self._impl is not None:
            self._dataset_task_index(dataset)
            return
        if not cfg.task_names:
            cfg.task_names = list(dataset.task_names)
        else:
            self._dataset_task_index(dataset)
        replay = dataset.as_replay_buffer()
        assert_action_space_with_dataset(self, replay.dataset_info)
        build_scalers_with_trajectory_slicer(self, replay)
        self.create_impl(dataset.observation_shape, dataset.action_size)
        assert self._impl is not None
        if cfg.prompt_length > 0:
            self._impl.modules.prompts.assign(self._scaled_prompts(dataset))
        if cfg.mask_init == "learned" and cfg.uses_masks:
            self._learn_masks(dataset)

    def _learn_masks(self, dataset: MultiTaskDataset) -> None:
        """``mask_init="learned"``: each task's starting mask chosen from its
        gradients on ``mask_batch_size`` sequences of its data (the same
        sequences on every rank), at ERK's per-layer densities."""
        assert self._impl is not None
        cfg = self._config
        rng = np.random.default_rng(step_seed(cfg.seed, 0, 2))
        batches = [
            self._to_torch(
                dataset.sample_batch(
                    np.full(cfg.mask_batch_size, dataset.task_names.index(name)),
                    cfg.context_size,
                    rng,
                )
            )
            for name in self.task_names
        ]
        shapes = self._impl.shapes
        densities = mask_ops.layer_densities("erk", shapes, 1.0 - cfg.sparsity)
        self._impl.learned_masks(batches, densities)

    def build_with_dataset(self, dataset: Any) -> None:  # type: ignore[override]
        """Build the model from a dataset without training (d3rlpy's hook):
        task list, scalers, initial masks and prompts, exactly as ``fit``
        would. Accepts what ``fit`` accepts; a later ``fit`` keeps this model."""
        self._prepare(as_multitask_dataset(dataset))

    def _scaled_prompts(self, dataset: MultiTaskDataset) -> dict[str, torch.Tensor]:
        raw = dataset.prompt_arrays(self._config.prompt_length)
        index = self._dataset_task_index(dataset)
        order = np.argsort(index)  # dataset order -> model order
        return self.scale_prompts({k: np.asarray(v)[order] for k, v in raw.items()})

    def scale_prompts(self, raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Prompt arrays (T, P, ...) as the model sees them: through its
        observation, action and reward scalers, on its device."""
        arrays = {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}
        keys = ("observations", "actions", "returns_to_go")
        scaled = scale_inputs(
            self._config, *(arrays[k].float().to(self._device) for k in keys)
        )
        arrays.update(zip(keys, scaled, strict=True))
        return arrays

    def fit(  # type: ignore[override]
        self,
        dataset: Any,
        n_steps: int,
        n_steps_per_epoch: int = 10000,
        experiment_name: str | None = None,
        with_timestamp: bool = True,
        logger_adapter: LoggerAdapterFactory | None = None,
        show_progress: bool = True,
        eval_env: Mapping[str, GymEnv] | None = None,
        eval_target_return: float | Mapping[str, float] | None = None,
        eval_action_sampler: TransformerActionSampler | None = None,
        save_interval: int = 1,
        callback: Callable[[Self, int, int], None] | None = None,
        evaluators: Mapping[str, Callable[[Self], float | Mapping[str, float]]]
        | None = None,
    ) -> Self:
        """Train on a multi-task Minari dataset (or a list/dict of per-task
        ones, or a ``MultiTaskDataset``); returns ``self``.

        Same options as d3rlpy's ``fit``. ``eval_env`` maps task names to
        environments, evaluated with d3rlpy's own
        ``evaluate_transformer_with_environment`` after every epoch; the target
        return defaults to the task's best return in the dataset.
        ``evaluators`` (as in d3rlpy's ``fit``) are called with the algorithm
        after every epoch; a float is logged under its name, a mapping (e.g.
        ``MultiTaskEvaluator``'s per-task success) metric by metric.
        """
        if n_steps <= 0 or n_steps_per_epoch <= 0:
            raise ValueError("n_steps and n_steps_per_epoch must be > 0")
        data, task_index, start = self._begin_fit(dataset, n_steps)
        options = FitOptions(
            n_steps_per_epoch=n_steps_per_epoch,
            show_progress=show_progress,
            eval_env=eval_env,
            eval_target_return=eval_target_return,
            eval_action_sampler=eval_action_sampler,
            save_interval=save_interval,
            callback=callback,
            evaluators=evaluators,
        )
        self._last_fit = FitLoop(
            self,
            data,
            task_index,
            options,
            experiment_name=experiment_name,
            with_timestamp=with_timestamp,
            logger_adapter=logger_adapter,
        )
        self._last_fit.run(start, n_steps)
        return self

    def _begin_fit(
        self, dataset: Any, n_steps: int
    ) -> tuple[MultiTaskDataset, NDArray, int]:
        """Data, model and mask schedule for ``n_steps`` more steps, checked
        before any step: (data, model task index of each dataset task (T_d,),
        the first step)."""
        data = as_multitask_dataset(dataset)
        self._prepare(data)
        self._record_provenance(dataset, data)
        assert self._impl is not None
        cfg = self._config
        task_index = self._dataset_task_index(data)
        if cfg.mask_interval > 0 and cfg.uses_masks:
            self._check_covers_all_tasks(data)  # fail now, not at the first update
        masks_module = self._impl.modules.masks
        start = self.grad_step
        masks_module.schedule_horizon.fill_(start + n_steps)
        return data, task_index, start

    def _record_provenance(self, source: Any, data: MultiTaskDataset) -> None:
        """Which Minari dataset each task of ``data`` comes from, when the
        input says (one Minari dataset, or a dict task -> Minari dataset)."""
        recorded = self._config.task_datasets
        if isinstance(source, Mapping):
            for name, part in source.items():
                ident = _minari_id(part)
                if ident and str(name) in data.task_names:
                    recorded.setdefault(str(name), ident)
            return
        ident = _minari_id(source)
        if ident:
            for name in data.task_names:
                recorded.setdefault(name, ident)


def _check_finite(inpt: TransformerInput) -> None:
    obs = np.asarray(inpt.observations)
    if not np.all(np.isfinite(obs)):
        raise ValueError("observation contains NaN or inf; check the environment")


register_learnable(HarmoDTConfig)
