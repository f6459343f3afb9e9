"""d3rlpy's own algorithms as multi-task baselines, through a one-hot task id.

Why this module exists: the paper compares HarmoDT with multi-task versions of
single-task methods (MTBC, MTIQL, MTDT). A d3rlpy algorithm has no notion of a
task, so the standard trick is used: append the task id as a one-hot vector to
every observation, in the training data *and* in the environment, and train the
unchanged algorithm on the pooled data. This module makes that trick reusable
for any d3rlpy algorithm, so ``harmodt_algo.benchmark`` can compare HarmoDT with
them on the same data, the same gradient-step budget and the same evaluator.

Pieces:

* :func:`append_one_hot` / :func:`strip_one_hot` - the observation transform
  and its inverse; :class:`OneHotTaskObservation` - the same as a gymnasium
  wrapper (for d3rlpy's own single-env evaluation helpers).
* :data:`BASELINES`, :func:`baseline_config`, :func:`make_baseline` - BC (MTBC),
  IQL (MTIQL), CQL (MTCQL), TD3+BC (MTTD3+BC) and d3rlpy's DecisionTransformer
  (``mtdt-d3rlpy``, MTDT as d3rlpy ships it) with small CPU-friendly defaults
  (MLPs 256x2, batch 256; the DT at HarmoDT's default size).
* :func:`fit_baseline` - builds the one-hot replay buffer (the task's position
  is the dataset's task order) and calls the algorithm's own ``fit``.
* :func:`baseline_policy` - the fitted algorithm as a ``MultiTaskPolicy`` for
  :class:`~harmodt_algo.evaluation.MultiTaskEvaluator`. Q-learning-style
  algorithms use the evaluator's :class:`~harmodt_algo.evaluation.
  D3rlpyOneHotPolicy`; transformers need a per-episode context, which the
  evaluator's adapters do not cover, so :class:`D3rlpyTransformerOneHotPolicy`
  is defined here.

The task's one-hot position is its index in the dataset's ``task_names`` (for a
``dataset_recipes`` dataset: the suite order). The policies look tasks up by
name, so an evaluator with a different task list still gets the right column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import d3rlpy
import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from d3rlpy.algos import (
    BCConfig,
    CQLConfig,
    DecisionTransformer,
    DecisionTransformerConfig,
    IQLConfig,
    TD3PlusBCConfig,
)
from d3rlpy.algos.qlearning import QLearningAlgoBase
from d3rlpy.algos.transformer import TransformerAlgoBase
from d3rlpy.algos.transformer.inputs import TransformerInput
from d3rlpy.base import DeviceArg, LearnableConfig
from d3rlpy.constants import ActionSpace
from d3rlpy.logging import FileAdapterFactory, LoggerAdapterFactory
from d3rlpy.models import EncoderFactory, VectorEncoderFactory
from d3rlpy.optimizers import AdamWFactory
from d3rlpy.optimizers.lr_schedulers import WarmupSchedulerFactory
from d3rlpy.preprocessing import MultiplyRewardScaler, StandardObservationScaler

from .data import as_multitask_dataset
from .evaluation import (
    D3rlpyOneHotPolicy,
    EpisodeContexts,
    MultiTaskPolicy,
    lookup_target_return,
    one_hot_replay_buffer,
)
from .types import F32, I64, Bool, FloatArray

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
# The one-hot transform
# --------------------------------------------------------------------------- #


def _check_num_tasks(num_tasks: int) -> int:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int | np.integer):
        raise TypeError(f"num_tasks must be an int, got {num_tasks!r}")
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be > 0, got {num_tasks}")
    return int(num_tasks)


def append_one_hot(
    observations: npt.ArrayLike, task_id: int | npt.ArrayLike, num_tasks: int
) -> F32:
    """``concat(observation, one_hot(task_id))`` along the last axis, float32.

    ``observations`` is (..., obs); ``task_id`` an int (every row is that task)
    or an integer array broadcastable to ``observations.shape[:-1]``.
    Returns (..., obs + num_tasks).
    """
    n = _check_num_tasks(num_tasks)
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim == 0:
        raise ValueError("observations must have at least one axis (..., obs)")
    ids = np.asarray(task_id)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"task ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"task ids must be in [0, {n}), got {ids}")
    onehot = np.eye(n, dtype=np.float32)[ids]  # ids.shape + (n,)
    onehot = np.broadcast_to(onehot, (*obs.shape[:-1], n))
    return np.concatenate([obs, onehot], axis=-1)


def strip_one_hot(observations: npt.ArrayLike, num_tasks: int) -> tuple[F32, I64]:
    """The inverse of :func:`append_one_hot`: ``(observations, task_ids)``.

    Raises ``ValueError`` when the last ``num_tasks`` columns are not a one-hot
    vector (exactly one 1, the rest 0) in every row.
    """
    n = _check_num_tasks(num_tasks)
    x = np.asarray(observations, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] <= n:
        raise ValueError(
            f"observations of shape {x.shape} have no room for {n} one-hot "
            "columns after the observation"
        )
    onehot = x[..., -n:]
    is_binary = np.all((onehot == 0.0) | (onehot == 1.0), axis=-1)
    if not np.all(is_binary & (onehot.sum(axis=-1) == 1.0)):
        raise ValueError(
            f"the last {n} columns are not a one-hot task id in every row; was "
            "num_tasks right?"
        )
    return x[..., :-n].copy(), np.argmax(onehot, axis=-1).astype(np.int64)


class OneHotTaskObservation(gym.ObservationWrapper[F32, Any, Any]):
    """An env whose observations carry the task's one-hot id (float32), for
    d3rlpy's single-env helpers such as ``evaluate_qlearning_with_environment``
    (the batched :class:`~harmodt_algo.evaluation.MultiTaskEvaluator` appends
    the one-hot itself)."""

    def __init__(self, env: gym.Env[Any, Any], task_id: int, num_tasks: int):
        super().__init__(env)
        n = _check_num_tasks(num_tasks)
        if not 0 <= task_id < n:
            raise ValueError(f"task_id must be in [0, {n}), got {task_id}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise TypeError(f"expected a flat Box observation space, got {space}")
        self.task_id = int(task_id)
        self.num_tasks = n
        low = np.concatenate([space.low.astype(np.float32), np.zeros(n, np.float32)])
        high = np.concatenate([space.high.astype(np.float32), np.ones(n, np.float32)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: Any) -> F32:
        return append_one_hot(observation, self.task_id, self.num_tasks)


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


def _positions(
    order: list[str] | None,
    num_tasks: int,
    task_ids: I64,
    task_names: Sequence[str] | None,
) -> I64:
    """One-hot position of each episode (by name when both lists are known)."""
    if order is None or task_names is None:
        if task_ids.size and (task_ids.min() < 0 or task_ids.max() >= num_tasks):
            raise ValueError(f"task ids must be in [0, {num_tasks}), got {task_ids}")
        return task_ids
    names = [task_names[i] for i in task_ids.tolist()]
    unknown = sorted(set(names) - set(order))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the policy knows: {order}")
    return np.array([order.index(n) for n in names], dtype=np.int64)


class D3rlpyTransformerOneHotPolicy:
    """A d3rlpy Transformer algorithm (``DecisionTransformer``) trained on
    one-hot task observations, as a :class:`MultiTaskPolicy`.

    Each episode keeps the same window as d3rlpy's ``StatefulTransformerWrapper``
    (returns-to-go start at the target and drop by each reward, timesteps start
    at 1, the current step's action slot is zeros, short windows are
    left-padded, the config's scalers are applied to the padded window like
    ``TorchTransformerInput.from_numpy``), so one episode gets the wrapper's
    actions. The one difference: the timestep is capped at ``max_timestep - 1``
    where the wrapper caps at ``max_timestep`` and would index past d3rlpy's
    position table.

    For d3rlpy's ``DecisionTransformer`` all active episodes share one batched
    forward pass per env step (through ``impl.modules.transformer``, d3rlpy's
    ``ContinuousDecisionTransformer``); any other Transformer algorithm is
    called through its public ``predict`` one episode at a time
    (``batched=False`` forces that path; d3rlpy's impl takes one sequence per
    call).

    Args:
        algo: a built d3rlpy Transformer algorithm with continuous actions.
        tasks: the one-hot order used in training: the number of tasks or the
            task names in that order (looked up by name, as
            :class:`~harmodt_algo.evaluation.D3rlpyOneHotPolicy`).
        target_returns: the initial return-to-go, one for all tasks or per task
            name (then ``reset`` must receive the task names).
        batched: ``None`` batches when ``algo`` is a ``DecisionTransformer``.
    """

    def __init__(
        self,
        algo: TransformerAlgoBase[Any, Any],
        tasks: int | Sequence[str],
        target_returns: float | Mapping[str, float],
        batched: bool | None = None,
    ):
        impl = algo.impl
        if impl is None:
            raise RuntimeError("the model is not built yet: fit() or load it first")
        if algo.get_action_type() != ActionSpace.CONTINUOUS:
            raise TypeError("only continuous-action Transformer algorithms")
        if isinstance(tasks, int | np.integer):
            self._num_tasks = _check_num_tasks(int(tasks))
            self._order: list[str] | None = None
        else:
            self._order = [str(t) for t in tasks]
            if not self._order:
                raise ValueError("tasks is empty")
            self._num_tasks = len(self._order)
        shape = impl.observation_shape
        if not isinstance(shape, Sequence) or len(shape) != 1:
            raise ValueError(f"flat observations only, got shape {shape}")
        self._obs_size = int(shape[0])
        if self._obs_size <= self._num_tasks:
            raise ValueError(
                f"the model's observations have {self._obs_size} features: no room "
                f"for a {self._num_tasks}-task one-hot"
            )
        self._algo = algo
        self._targets = target_returns
        self._batched = (
            isinstance(algo, DecisionTransformer) if batched is None else batched
        )
        cfg = algo.config
        self._context = int(cfg.context_size)
        self._max_timestep = int(cfg.max_timestep)
        self._action_size = int(impl.action_size)
        self._device = impl.device
        self.reset(np.zeros(0, np.int64))

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    def _target(self, name: str | None) -> float:
        return lookup_target_return(self._targets, name)

    def reset(self, task_ids: I64, task_names: Sequence[str] | None = None) -> None:
        ids = np.asarray(task_ids, dtype=np.int64).reshape(-1)  # (N,)
        self._positions = _positions(self._order, self._num_tasks, ids, task_names)
        names: list[str | None] = (
            [task_names[i] for i in ids.tolist()]
            if task_names is not None
            else [None] * ids.size
        )
        self._ctx = EpisodeContexts(
            np.array([self._target(name) for name in names], dtype=np.float64),
            self._context,
            self._obs_size,
            self._action_size,
            # d3rlpy's position table has max_timestep rows: stop one short
            self._max_timestep - 1,
        )

    def act(
        self,
        observations: FloatArray,  # (N, obs)
        rewards: FloatArray,  # (N,) previous reward (0 at the start)
        task_ids: I64,  # (N,)
        active: Bool,  # (N,)
    ) -> F32:  # (N, A)
        n = self._positions.size
        obs = np.asarray(observations)
        if obs.shape != (n, self._obs_size - self._num_tasks):
            raise ValueError(
                f"observations must have shape ({n}, "
                f"{self._obs_size - self._num_tasks}), got {obs.shape}; call "
                "reset() with the batch's task ids first"
            )
        out = np.zeros((n, self._action_size), np.float32)
        idx = np.flatnonzero(np.asarray(active, dtype=bool))  # (n_active,)
        if idx.size == 0:
            return out
        reward = np.asarray(rewards, dtype=np.float64).reshape(-1)[idx]
        sel: slice | I64 = slice(None) if idx.size == n else idx
        one_hot = append_one_hot(obs[idx], self._positions[idx], self._num_tasks)
        self._ctx.push(idx, sel, one_hot, reward)
        if self._batched:
            action = self._predict_batched(sel)
        else:
            action = self._predict_each(idx)
        self._ctx.record(idx, sel, action, reward)
        out[idx] = action
        return out

    def _predict_batched(self, sel: slice | I64) -> F32:
        cfg = self._algo.config
        impl = self._algo.impl
        assert impl is not None
        obs, act, rtg, ts, mask = self._ctx.scaled(sel, cfg, self._device)
        modules: Any = impl.modules
        modules.set_eval()
        with torch.no_grad():
            # the same call as DecisionTransformerImpl.inner_predict, batched
            out = modules.transformer(obs, act, rtg, ts, 1 - mask)[:, -1]  # (n, A)
            if cfg.action_scaler is not None:
                out = cfg.action_scaler.reverse_transform(out)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def _predict_each(self, idx: I64) -> F32:
        rows = []
        for i in idx.tolist():
            ctx = self._ctx
            length = int(ctx.mask[i].sum())
            inpt = TransformerInput(
                observations=ctx.obs[i, -length:],
                actions=ctx.act[i, -length:],
                rewards=ctx.rew[i, -length:],
                returns_to_go=ctx.rtg[i, -length:],
                timesteps=ctx.ts[i, -length:],
            )
            rows.append(np.asarray(self._algo.predict(inpt), np.float32))
        return np.stack(rows).reshape(len(rows), self._action_size)


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
