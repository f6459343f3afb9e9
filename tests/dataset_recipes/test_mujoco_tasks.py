"""The unseen-task benchmarks' environments: Prompt-DT's rewards,
observations, tasks and splits, on Gymnasium's MuJoCo models."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

from dataset_recipes import BENCHMARKS, benchmark_tasks
from dataset_recipes.mujoco_tasks import EPISODE_STEPS, env_id


def test_tasks_and_splits_are_prompt_dts() -> None:
    vel = benchmark_tasks("cheetah-vel")
    assert len(vel["values"]) == 40 and vel["test"] == [2, 7, 15, 23, 26]
    np.testing.assert_allclose(vel["values"], 0.075 * np.arange(1, 41))
    assert len(vel["train"]) == 35 and not set(vel["train"]) & set(vel["test"])
    ant = benchmark_tasks("ant-dir")
    assert len(ant["values"]) == 50 and ant["test"] == [6, 17, 23, 30, 41]
    assert all(0.0 <= v < 2 * np.pi for v in ant["values"])
    assert benchmark_tasks("cheetah-dir") == {
        "values": [1.0, -1.0],
        "train": [0, 1],
        "test": [0, 1],
    }
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmark_tasks("hopper-vel")


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_environment_steps_with_its_reward(name: str) -> None:
    env = gym.make(env_id(name), task=1)
    assert env.spec is not None and env.spec.max_episode_steps == EPISODE_STEPS
    obs, _ = env.reset(seed=0)
    assert obs.shape == ((27,) if name == "ant-dir" else (20,))
    inner = env.unwrapped
    action = np.full(env.action_space.shape, 0.5)
    before = inner.get_body_com("torso")[:2].copy()
    x_before = float(inner.data.qpos[0])
    obs, reward, terminated, truncated, info = env.step(action)
    ctrl = float(np.sum(action**2))
    if name == "ant-dir":
        velocity = (inner.get_body_com("torso")[:2] - before) / inner.dt
        goal = benchmark_tasks(name)["values"][1]
        forward = float(velocity @ [np.cos(goal), np.sin(goal)])
        assert info["reward_forward"] == pytest.approx(forward)
        expected = forward - 0.5 * ctrl + info["reward_contact"] + 1.0
    else:
        v = (float(inner.data.qpos[0]) - x_before) / inner.dt
        goal = benchmark_tasks(name)["values"][1]
        forward = -abs(v - goal) if name == "cheetah-vel" else goal * v
        expected = forward - 0.05 * ctrl
        assert not terminated
    assert reward == pytest.approx(expected)
    assert not truncated
    env.close()


def test_the_spec_serialises_and_rebuilds_the_same_task() -> None:
    env = gym.make(env_id("cheetah-vel"), task=7)
    assert env.spec is not None
    spec = EnvSpec.from_json(env.spec.to_json())
    again = gym.make(spec)
    assert again.unwrapped.goal == env.unwrapped.goal == pytest.approx(0.6)
    with pytest.raises(ValueError, match="tasks 0..39"):
        gym.make(env_id("cheetah-vel"), task=40)
