"""Tests of the one-hot baseline adapter (``harmodt_algo.baselines``).

Synthetic data where the two tasks share observations but want opposite
actions: a baseline can only fit it if the one-hot columns reach the model.
"""

from __future__ import annotations

import harmodt_algo  # noqa: F401  (before d3rlpy: silences old gym's notice)

# isort: split
import gymnasium as gym
import numpy as np
import pytest
from d3rlpy.algos import BC, DecisionTransformer
from d3rlpy.dataset import Episode
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.models import VectorEncoderFactory
from d3rlpy.preprocessing import MultiplyRewardScaler, StandardObservationScaler

from harmodt_algo import MultiTaskDataset
from harmodt_algo.baselines import (
    BASELINES,
    D3rlpyTransformerOneHotPolicy,
    OneHotTaskObservation,
    append_one_hot,
    baseline_config,
    baseline_policy,
    fit_baseline,
    make_baseline,
    strip_one_hot,
)
from harmodt_algo.evaluation import D3rlpyOneHotPolicy

OBS, ACT, LENGTH = 5, 2, 30
TASK_ACTION = {"left": 0.5, "right": -0.5}


def _dataset(episodes_per_task: int = 4, length: int = LENGTH) -> MultiTaskDataset:
    rng = np.random.default_rng(0)
    episodes = {}
    for task, value in TASK_ACTION.items():
        episodes[task] = [
            Episode(
                observations=rng.normal(size=(length, OBS)).astype(np.float32),
                actions=np.full((length, ACT), value, np.float32)
                + rng.normal(scale=0.01, size=(length, ACT)).astype(np.float32),
                rewards=np.ones((length, 1), np.float32),
                terminated=False,
            )
            for _ in range(episodes_per_task)
        ]
    return MultiTaskDataset.from_episodes(episodes)


# ----------------------------------------------------------------- one-hot


def test_append_and_strip_round_trip() -> None:
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(6, OBS))
    ids = np.array([0, 2, 1, 2, 0, 1])
    x = append_one_hot(obs, ids, 3)
    assert x.shape == (6, OBS + 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, OBS:], np.eye(3)[ids])
    back, back_ids = strip_one_hot(x, 3)
    np.testing.assert_allclose(back, obs.astype(np.float32))
    np.testing.assert_array_equal(back_ids, ids)

    # one task id for a whole (batch, time, obs) block
    block = append_one_hot(rng.normal(size=(2, 4, OBS)), 1, 3)
    assert block.shape == (2, 4, OBS + 3)
    assert np.all(block[..., OBS:] == np.array([0, 1, 0]))
    assert np.all(strip_one_hot(block, 3)[1] == 1)


def test_one_hot_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        append_one_hot(np.zeros((2, OBS)), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="num_tasks must be > 0"):
        append_one_hot(np.zeros((2, OBS)), 0, 0)
    with pytest.raises(TypeError, match="integers"):
        append_one_hot(np.zeros((2, OBS)), np.array([0.0, 1.0]), 2)
    not_one_hot = np.concatenate([np.zeros((2, OBS)), [[1, 1], [0, 0]]], axis=1)
    with pytest.raises(ValueError, match="not a one-hot"):
        strip_one_hot(not_one_hot, 2)


def test_env_wrapper_appends_the_task() -> None:
    env = OneHotTaskObservation(gym.make("Pendulum-v1"), task_id=2, num_tasks=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3 + 4,) and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[3:], [0, 0, 1, 0])
    obs, *_ = env.step(env.action_space.sample())
    assert strip_one_hot(obs[None], 4)[1].tolist() == [2]
    with pytest.raises(ValueError, match="task_id"):
        OneHotTaskObservation(gym.make("Pendulum-v1"), task_id=4, num_tasks=4)


# ----------------------------------------------------------------- configs


def test_baseline_defaults() -> None:
    assert list(BASELINES) == ["mtbc", "mtiql", "mtdt-d3rlpy", "mtcql", "mttd3bc"]
    bc = baseline_config("mtbc")
    assert bc.batch_size == 256
    assert isinstance(bc.encoder_factory, VectorEncoderFactory)
    assert bc.encoder_factory.hidden_units == [256, 256]
    iql = baseline_config("MTIQL")
    assert iql.value_encoder_factory.hidden_units == [256, 256]
    dt = baseline_config("mtdt-d3rlpy")
    assert (dt.num_layers, dt.num_heads, dt.context_size, dt.max_timestep) == (
        3,
        4,
        20,
        1000,
    )
    assert dt.encoder_factory.hidden_units == [128]  # embedding size 128
    assert isinstance(dt.reward_scaler, MultiplyRewardScaler)
    assert dt.reward_scaler.multiplier == 0.001
    assert isinstance(dt.observation_scaler, StandardObservationScaler)
    for name in BASELINES:
        algo = make_baseline(name)
        assert algo.impl is None  # built by fit


def test_baseline_overrides_and_errors() -> None:
    small = baseline_config("mtiql", hidden_units=[16], batch_size=8)
    assert small.batch_size == 8
    for field in ("actor", "critic", "value"):
        assert getattr(small, f"{field}_encoder_factory").hidden_units == [16]
    with pytest.raises(ValueError, match="choose one of.*mtbc.*mttd3bc"):
        make_baseline("mtsac")
    with pytest.raises(ValueError, match="valid:.*batch_size"):
        baseline_config("mtbc", embed_size=3)


# ------------------------------------------------------------------- BC fit


def test_bc_fit_predict_uses_the_task_one_hot() -> None:
    data = _dataset()
    bc = make_baseline("mtbc", hidden_units=[32], batch_size=64)
    assert isinstance(bc, BC)
    out = fit_baseline(
        bc, data, 300, logger_adapter=NoopAdapterFactory(), show_progress=False, seed=0
    )
    assert out is bc
    assert bc.impl is not None and bc.impl.observation_shape == (OBS + 2,)
    obs = np.random.default_rng(5).normal(size=(16, OBS))
    left = bc.predict(append_one_hot(obs, 0, 2))
    right = bc.predict(append_one_hot(obs, 1, 2))
    assert left.shape == right.shape == (16, ACT)
    # same observations, opposite actions: only the one-hot tells them apart
    assert left.mean() > 0.3 and right.mean() < -0.3

    policy = baseline_policy(bc, data.task_names)
    assert isinstance(policy, D3rlpyOneHotPolicy)
    policy.reset(np.array([1, 0]), ["left", "right"])  # suite order differs
    acted = policy.act(obs[:2], np.zeros(2), np.array([1, 0]), np.ones(2, bool))
    np.testing.assert_allclose(acted[0], right[0], atol=1e-5)
    np.testing.assert_allclose(acted[1], left[1], atol=1e-5)


# ------------------------------------------------------- transformer policy


@pytest.fixture(scope="module")
def tiny_dt() -> DecisionTransformer:
    dt = make_baseline(
        "mtdt-d3rlpy",
        hidden_units=[16],
        num_heads=2,
        num_layers=1,
        context_size=4,
        max_timestep=50,
        batch_size=8,
    )
    fit_baseline(
        dt,
        _dataset(2),
        3,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
        seed=0,
    )
    assert isinstance(dt, DecisionTransformer)
    return dt


@pytest.mark.parametrize("batched", [True, False])
def test_transformer_policy_matches_d3rlpy_stateful_wrapper(
    tiny_dt: DecisionTransformer, batched: bool
) -> None:
    names = ["left", "right"]
    targets = {"left": 30.0, "right": 12.0}
    policy = D3rlpyTransformerOneHotPolicy(tiny_dt, names, targets, batched=batched)
    ids = np.array([0, 1, 1])
    policy.reset(ids, names)
    wrappers = [tiny_dt.as_stateful_wrapper(targets[names[i]]) for i in ids]
    rng = np.random.default_rng(3)
    rewards = np.zeros(3)
    active = np.ones(3, bool)
    for step in range(7):  # longer than the context (4): the window slides
        if step == 5:
            active[1] = False  # an episode ends; the others go on
        obs = rng.normal(size=(3, OBS))
        actions = policy.act(obs, rewards, ids, active)
        assert actions.shape == (3, ACT)
        for i in np.flatnonzero(active):
            expected = wrappers[i].predict(
                append_one_hot(obs[i], ids[i], 2), float(rewards[i])
            )
            np.testing.assert_allclose(actions[i], expected, atol=1e-5)
        rewards = rng.uniform(size=3)
    assert np.all(actions[1] == 0.0)  # the ended episode gets no action


def test_transformer_policy_errors(tiny_dt: DecisionTransformer) -> None:
    with pytest.raises(ValueError, match="target_returns"):
        baseline_policy(tiny_dt, ["left", "right"])
    policy = baseline_policy(tiny_dt, ["left", "right"], 10.0)
    with pytest.raises(ValueError, match="unknown task"):
        policy.reset(np.array([0]), ["push-v3"])
    policy.reset(np.array([0]), ["left"])
    with pytest.raises(ValueError, match=r"shape \(1, 5\)"):
        policy.act(
            np.zeros((1, OBS + 2)), np.zeros(1), np.zeros(1, np.int64), np.ones(1, bool)
        )


def test_fit_baseline_checks_the_dt_time_table() -> None:
    dt = make_baseline("mtdt-d3rlpy", hidden_units=[8], num_heads=1, max_timestep=20)
    with pytest.raises(ValueError, match="max_timestep > 30"):
        fit_baseline(dt, _dataset(1), 1, logger_adapter=NoopAdapterFactory())
    with pytest.raises(TypeError, match="d3rlpy algorithm"):
        fit_baseline(object(), _dataset(1), 1)
