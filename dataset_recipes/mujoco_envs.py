"""The classes of :mod:`dataset_recipes.mujoco_tasks` (see there for what
each benchmark is and where it comes from). Imported by Gymnasium when one is
made, so MuJoCo loads only then."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from .mujoco_tasks import task_value as _value

__all__ = ["AntDirEnv", "CheetahDirEnv", "CheetahVelEnv"]


class _CheetahTask(HalfCheetahEnv):  # type: ignore[misc]
    """HalfCheetah with Prompt-DT's observation and a task reward."""

    benchmark = ""

    def __init__(self, task: int = 0, **kwargs: Any) -> None:
        self.task = int(task)
        self.goal = _value(self.benchmark, self.task)
        super().__init__(**kwargs)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (20,), np.float64)

    def _get_obs(self) -> np.ndarray:
        return np.concatenate(
            [
                self.data.qpos.flat[1:],  # (8,)
                self.data.qvel.flat,  # (9,)
                self.get_body_com("torso").flat,  # (3,)
            ]
        )

    def _forward_reward(self, velocity: float) -> float:
        raise NotImplementedError

    def step(self, action: np.ndarray) -> Any:  # the 5-tuple of gymnasium
        x_before = float(self.data.qpos[0])
        self.do_simulation(action, self.frame_skip)
        velocity = (float(self.data.qpos[0]) - x_before) / self.dt
        forward = self._forward_reward(velocity)
        ctrl = 0.5 * 1e-1 * float(np.sum(np.square(action)))
        info = {"x_velocity": velocity, "reward_forward": forward, "reward_ctrl": -ctrl}
        return self._get_obs(), forward - ctrl, False, False, info


class CheetahVelEnv(_CheetahTask):
    """Cheetah-vel: run at the task's target velocity."""

    benchmark = "cheetah-vel"

    def _forward_reward(self, velocity: float) -> float:
        return -abs(velocity - self.goal)


class CheetahDirEnv(_CheetahTask):
    """Cheetah-dir: run forward (task 0) or backward (task 1)."""

    benchmark = "cheetah-dir"

    def _forward_reward(self, velocity: float) -> float:
        return self.goal * velocity


class AntDirEnv(AntEnv):  # type: ignore[misc]
    """Ant-dir: walk in the task's direction (an angle in the plane)."""

    def __init__(self, task: int = 0, **kwargs: Any) -> None:
        self.task = int(task)
        self.goal = _value("ant-dir", self.task)
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
        super().__init__(**kwargs)

    def step(self, action: np.ndarray) -> Any:  # the 5-tuple of gymnasium
        before = self.get_body_com("torso")[:2].copy()
        self.do_simulation(action, self.frame_skip)
        velocity = (self.get_body_com("torso")[:2] - before) / self.dt  # (2,)
        direction = np.array([np.cos(self.goal), np.sin(self.goal)])
        forward = float(velocity @ direction)
        ctrl = 0.5 * float(np.sum(np.square(action)))
        contact = (
            0.5
            * 1e-3
            * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1.0, 1.0))))
        )
        reward = forward - ctrl - contact + 1.0
        state = self.state_vector()
        healthy = bool(np.isfinite(state).all()) and 0.2 <= state[2] <= 1.0
        info = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl,
            "reward_contact": -contact,
            "xy_velocity": velocity,
        }
        return self._get_obs(), reward, not healthy, False, info
