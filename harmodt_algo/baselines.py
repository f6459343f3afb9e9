"""d3rlpy's own algorithms as multi-task baselines, through a one-hot task id.

Why this module exists: the paper compares HarmoDT with multi-task versions of
single-task methods (MTBC, MTIQL, MTDT). A d3rlpy algorithm has no notion of a
task, so the standard trick is used: append the task id as a one-hot vector to
every observation, in the training data *and* in the environment, and train the
unchanged algorithm on the pooled data. The trick itself (observation
transform, one-hot episodes, the policy adapters) lives in
:mod:`harmodt_algo.one_hot`; this module names the baselines, builds them and
fits them, so ``harmodt_algo.benchmark`` can compare HarmoDT with them on the
same data, the same gradient-step budget and the same evaluator.

Pieces:

* :data:`BASELINES`, :func:`baseline_config`, :func:`make_baseline` - BC (MTBC),
  IQL (MTIQL), CQL (MTCQL), TD3+BC (MTTD3+BC) and d3rlpy's DecisionTransformer
  (``mtdt-d3rlpy``, MTDT as d3rlpy ships it) with small CPU-friendly defaults
  (MLPs 256x2, batch 256; the DT at HarmoDT's default size).
* :func:`fit_baseline` - builds the one-hot replay buffer (the task's position
  is the dataset's task order) and calls the algorithm's own ``fit``.
* :func:`baseline_policy` - the fitted algorithm as a ``MultiTaskPolicy`` for
  :class:`~harmodt_algo.evaluation.MultiTaskEvaluator`:
  :class:`~harmodt_algo.one_hot.D3rlpyOneHotPolicy` for Q-learning-style
  algorithms, :class:`~harmodt_algo.one_hot.D3rlpyTransformerOneHotPolicy` for
  transformers (which need a per-episode context).

:func:`append_one_hot`, :func:`strip_one_hot`, :class:`OneHotTaskObservation`
and :class:`D3rlpyTransformerOneHotPolicy` used to be defined here; they are
re-exported from :mod:`harmodt_algo.one_hot` so existing imports keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import d3rlpy
from d3rlpy.algos import (
    BCConfig,
    CQLConfig,
    DecisionTransformerConfig,
    IQLConfig,
    TD3PlusBCConfig,
)
from d3rlpy.algos.qlearning import QLearningAlgoBase
from d3rlpy.algos.transformer import TransformerAlgoBase
from d3rlpy.base import DeviceArg, LearnableConfig
from d3rlpy.logging import FileAdapterFactory, LoggerAdapterFactory
from d3rlpy.models import EncoderFactory, VectorEncoderFactory
from d3rlpy.optimizers import AdamWFactory
from d3rlpy.optimizers.lr_schedulers import WarmupSchedulerFactory
from d3rlpy.preprocessing import MultiplyRewardScaler, StandardObservationScaler

from .data import as_multitask_dataset
from .evaluation import MultiTaskPolicy
from .one_hot import (
    D3rlpyOneHotPolicy,
    D3rlpyTransformerOneHotPolicy,
    OneHotTaskObservation,
    append_one_hot,
    one_hot_replay_buffer,
    strip_one_hot,
)

__all__ = [
    "BASELINES",
    "BaselineSpec",
    "BaselineAlgo",
    "D3rlpyTransformerOneHotPolicy",
    "OneHotTaskObservation",
    "append_one_hot",
    "baseline_config",
    "baseline_names",
    "baseline_policy",
    "fit_baseline",
    "make_baseline",
    "strip_one_hot",
]

#: Anything :func:`make_baseline` returns.
BaselineAlgo: TypeAlias = "QLearningAlgoBase[Any, Any] | TransformerAlgoBase[Any, Any]"

#: Override key of :func:`baseline_config` that resizes every MLP encoder.
HIDDEN_UNITS_KEY = "hidden_units"


# --------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------- #


def _mlp(units: Sequence[int] = (256, 256)) -> VectorEncoderFactory:
    return VectorEncoderFactory(hidden_units=list(units))


def _bc() -> LearnableConfig:
    return BCConfig(
        batch_size=256,
        learning_rate=1e-3,
        encoder_factory=_mlp(),
        observation_scaler=StandardObservationScaler(),
    )


def _iql() -> LearnableConfig:
    return IQLConfig(
        batch_size=256,
        actor_encoder_factory=_mlp(),
        critic_encoder_factory=_mlp(),
        value_encoder_factory=_mlp(),
        observation_scaler=StandardObservationScaler(),
        reward_scaler=MultiplyRewardScaler(0.1),
    )


def _cql() -> LearnableConfig:
    return CQLConfig(
        batch_size=256,
        actor_encoder_factory=_mlp(),
        critic_encoder_factory=_mlp(),
        observation_scaler=StandardObservationScaler(),
        reward_scaler=MultiplyRewardScaler(0.1),
    )


def _td3bc() -> LearnableConfig:
    return TD3PlusBCConfig(
        batch_size=256,
        actor_encoder_factory=_mlp(),
        critic_encoder_factory=_mlp(),
        observation_scaler=StandardObservationScaler(),
        reward_scaler=MultiplyRewardScaler(0.1),
    )


def _dt() -> LearnableConfig:
    # HarmoDT's default size and optimiser (embed 128, 3 layers, 4 heads, K 20,
    # AdamW lr 1e-4 wd 1e-4, clip 0.25, 1000 warm-up steps, batch 64)
    return DecisionTransformerConfig(
        batch_size=64,
        learning_rate=1e-4,
        encoder_factory=_mlp([128]),
        num_heads=4,
        num_layers=3,
        context_size=20,
        max_timestep=1000,
        optim_factory=AdamWFactory(
            weight_decay=1e-4,
            clip_grad_norm=0.25,
            lr_scheduler_factory=WarmupSchedulerFactory(warmup_steps=1000),
        ),
        observation_scaler=StandardObservationScaler(),
        reward_scaler=MultiplyRewardScaler(0.001),
    )


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """One named baseline: its label in tables and its default config."""

    name: str
    label: str
    config: Callable[[], LearnableConfig]
    description: str


#: The named baselines (``make_baseline(name)``). Q-learning baselines scale
#: rewards by 0.1 (Meta-World pays up to 10 per step, so per-step rewards land
#: in [0, 1], the range IQL/CQL's defaults were tuned on).
BASELINES: dict[str, BaselineSpec] = {
    spec.name: spec
    for spec in (
        BaselineSpec("mtbc", "MTBC", _bc, "d3rlpy BC, MLP 256x2, batch 256, lr 1e-3"),
        BaselineSpec(
            "mtiql",
            "MTIQL",
            _iql,
            "d3rlpy IQL, MLPs 256x2, batch 256, reward x 0.1",
        ),
        BaselineSpec(
            "mtdt-d3rlpy",
            "MTDT (d3rlpy)",
            _dt,
            "d3rlpy DecisionTransformer at HarmoDT's default size (embed 128, "
            "3 layers, 4 heads, K 20), batch 64, reward x 0.001",
        ),
        BaselineSpec(
            "mtcql",
            "MTCQL",
            _cql,
            "d3rlpy CQL, MLPs 256x2, batch 256, reward x 0.1",
        ),
        BaselineSpec(
            "mttd3bc",
            "MTTD3+BC",
            _td3bc,
            "d3rlpy TD3+BC, MLPs 256x2, batch 256, reward x 0.1",
        ),
    )
}


def baseline_names() -> list[str]:
    """The valid baseline names, in table order."""
    return list(BASELINES)


def _spec(name: str) -> BaselineSpec:
    key = name.lower()
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {baseline_names()}")
    return BASELINES[key]


def baseline_config(name: str, **overrides: Any) -> LearnableConfig:
    """The default config of baseline ``name`` with ``overrides`` applied.

    Overrides are config fields of the d3rlpy config (e.g. ``batch_size=32``);
    ``hidden_units=[64, 64]`` additionally replaces every MLP encoder factory
    (for the DT: the observation embedding, so its last entry is the embedding
    size).
    """
    config = _spec(name).config()
    fields = {f.name for f in dataclasses.fields(config)}
    changes = dict(overrides)
    if HIDDEN_UNITS_KEY in changes:
        units = changes.pop(HIDDEN_UNITS_KEY)
        if isinstance(units, int):
            units = [units]
        if not units or not all(isinstance(u, int) and u > 0 for u in units):
            raise ValueError(
                f"{HIDDEN_UNITS_KEY} must be a list of positive ints, got {units!r}"
            )
        for field in sorted(fields):
            value = getattr(config, field)
            if field.endswith("encoder_factory") and isinstance(value, EncoderFactory):
                changes.setdefault(field, _mlp(units))
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for baseline {name!r}; valid: "
            f"{sorted(fields | {HIDDEN_UNITS_KEY})}"
        )
    return dataclasses.replace(config, **changes)


def make_baseline(name: str, device: DeviceArg = False, **overrides: Any) -> Any:
    """A new, unfitted d3rlpy algorithm for baseline ``name`` (see
    :data:`BASELINES`); ``overrides`` as in :func:`baseline_config`."""
    algo = baseline_config(name, **overrides).create(device=device)
    return algo


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def fit_baseline(
    algo: Any,
    dataset: Any,
    n_steps: int,
    n_steps_per_epoch: int | None = None,
    *,
    experiment_name: str | None = None,
    with_timestamp: bool = True,
    logger_adapter: LoggerAdapterFactory | None = None,
    show_progress: bool = True,
    save_interval: int = 1,
    seed: int | None = None,
    callback: Callable[[Any, int, int], None] | None = None,
) -> Any:
    """Fit a d3rlpy algorithm on ``dataset`` with one-hot task ids; returns it.

    ``dataset``: anything ``as_multitask_dataset`` accepts (a recipe Minari
    dataset, its id, a ``MultiTaskDataset``, ...). The one-hot position of a
    task is its index in the dataset's ``task_names``; evaluate with
    ``baseline_policy(algo, data.task_names, ...)``. ``seed`` (when given)
    calls ``d3rlpy.seed`` first. ``n_steps_per_epoch`` defaults to ``n_steps``
    (one epoch); ``logger_adapter`` to d3rlpy's ``FileAdapterFactory``.
    """
    if n_steps <= 0:
        raise ValueError(f"n_steps must be > 0, got {n_steps}")
    per_epoch = n_steps if n_steps_per_epoch is None else n_steps_per_epoch
    if per_epoch <= 0:
        raise ValueError(f"n_steps_per_epoch must be > 0, got {per_epoch}")
    if not isinstance(algo, QLearningAlgoBase | TransformerAlgoBase):
        raise TypeError(
            f"fit_baseline needs a d3rlpy algorithm, got {type(algo).__name__}"
        )
    data = as_multitask_dataset(dataset)
    if isinstance(algo, TransformerAlgoBase):
        limit = int(algo.config.max_timestep)
        # d3rlpy's timesteps run 1..T and index an Embedding(max_timestep)
        if data.max_episode_length >= limit:
            raise ValueError(
                f"the dataset has episodes of {data.max_episode_length} steps but "
                f"max_timestep is {limit}; pass max_timestep > "
                f"{data.max_episode_length}"
            )
    replay = one_hot_replay_buffer(data)
    if seed is not None:
        d3rlpy.seed(int(seed))
    name = experiment_name or f"{type(algo).__name__}_onehot"
    adapter = logger_adapter if logger_adapter is not None else FileAdapterFactory()
    algo.fit(
        replay,
        n_steps=n_steps,
        n_steps_per_epoch=per_epoch,
        experiment_name=name,
        with_timestamp=with_timestamp,
        logger_adapter=adapter,
        show_progress=show_progress,
        save_interval=save_interval,
        callback=callback,
    )
    return algo


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #


def baseline_policy(
    algo: Any,
    task_names: Sequence[str],
    target_returns: float | Mapping[str, float] | None = None,
) -> MultiTaskPolicy:
    """A fitted baseline as a policy for ``MultiTaskEvaluator.evaluate``.

    ``task_names``: the one-hot order used in training (the training dataset's
    ``task_names``). ``target_returns`` is needed for Transformer algorithms
    (``MultiTaskEvaluator.target_returns()`` gives the documented default: each
    task's best return in the dataset).
    """
    if isinstance(algo, QLearningAlgoBase):
        return D3rlpyOneHotPolicy(algo, list(task_names))
    if isinstance(algo, TransformerAlgoBase):
        if target_returns is None:
            raise ValueError(
                "a Transformer baseline needs target_returns (a float or a per-task "
                "mapping, e.g. MultiTaskEvaluator.target_returns())"
            )
        return D3rlpyTransformerOneHotPolicy(algo, list(task_names), target_returns)
    raise TypeError(
        f"not a d3rlpy algorithm: {type(algo).__name__}; expected a Q-learning or "
        "Transformer algorithm"
    )
