"""The unseen-task benchmarks of Prompt-DT and HarmoDT: Cheetah-vel,
Cheetah-dir and Ant-dir, as Gymnasium environments.

Why here: the paper's generalisation numbers are on these three, and their
data (per-task SAC experts, on a personal drive) cannot be rebuilt; the
environments can. Each is Gymnasium's MuJoCo model (``HalfCheetah-v5``,
``Ant-v5``: the same simulator, frame skip 5 and reset noise 0.1 as the
benchmarks' ``gym`` classes) with the task-parameterised reward and the
observation that Prompt-DT's environments define
(``envs/mujoco-control-envs/mujoco_control_envs/tp_envs/`` in
github.com/mxu34/prompt-dt at 5f665e5):

* **Cheetah-vel** (``half_cheetah_vel.py``): reward ``-|v_x - v_goal| -
  0.05·|a|²``; 40 target velocities 0.075 ... 3.0.
* **Cheetah-dir** (``half_cheetah_dir.py``): reward ``d·v_x - 0.05·|a|²``,
  ``d = +1`` (task 0) or ``-1`` (task 1).
* **Ant-dir** (``ant_dir.py``): reward ``(v_xy · (cos g, sin g)) - 0.5·|a|² -
  5e-4·|clip(cfrc_ext, -1, 1)|² + 1``; the episode ends when the torso leaves
  z in [0.2, 1.0]; 50 goal angles.

Observations: the cheetahs' are ``qpos[1:]``, ``qvel`` and the torso's
position (20 values, ``half_cheetah.py``); the ant's ``qpos[2:]`` and ``qvel``
(27, ``ant.py``); the goal is not in the observation (``include_goal=False``
in Prompt-DT's ``prompt_utils.py``). Episodes are 200 steps there. The task
values and the train / test splits are in ``prompt_dt_tasks.json`` (read
from Prompt-DT's task files). One difference: Prompt-DT's ant model is its own
``ant.xml`` (with a goal marker site); this uses Gymnasium's.

Every task is registered as a Gymnasium id with a string entry point, so its
``EnvSpec`` serialises and Minari's ``recover_environment`` rebuilds it:
``gym.make("harmodt/CheetahVel-v0", task=2)``. The classes are in
:mod:`dataset_recipes.mujoco_envs` (imported by Gymnasium on ``make``: MuJoCo
loads only then).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import gymnasium as gym

__all__ = [
    "BENCHMARKS",
    "EPISODE_STEPS",
    "benchmark_tasks",
    "env_id",
    "eval_reset_seed",
    "register",
    "task_value",
]

#: Episode length of the three benchmarks in Prompt-DT (``prompt_utils.py``).
EPISODE_STEPS = 200
#: Benchmark name -> (Gymnasium id, entry point class name).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "cheetah-vel": ("harmodt/CheetahVel-v0", "CheetahVelEnv"),
    "cheetah-dir": ("harmodt/CheetahDir-v0", "CheetahDirEnv"),
    "ant-dir": ("harmodt/AntDir-v0", "AntDirEnv"),
}


@cache
def _tasks() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (Path(__file__).with_name("prompt_dt_tasks.json")).read_text()
    )
    return data


def benchmark_tasks(name: str) -> dict[str, list[int] | list[float]]:
    """``{"values": [...], "train": [...], "test": [...]}`` of a benchmark
    (task indices; Cheetah-dir's test tasks are its training tasks)."""
    if name not in BENCHMARKS:
        raise ValueError(
            f"unknown benchmark {name!r}; choose one of {list(BENCHMARKS)}"
        )
    entry = _tasks()[name]
    values = list(entry["values"])
    test = list(entry["test"])
    train = [i for i in range(len(values)) if i not in test] or test
    return {"values": values, "train": train, "test": test}


def env_id(name: str) -> str:
    """The Gymnasium id of a benchmark's environment."""
    return BENCHMARKS[name][0]


def task_value(name: str, task: int) -> float:
    """The task parameter of ``task`` (a velocity, a direction, an angle)."""
    values = benchmark_tasks(name)["values"]
    if not 0 <= task < len(values):
        raise ValueError(f"{name} has tasks 0..{len(values) - 1}, got {task}")
    return float(values[task])


def eval_reset_seed(seed: int, episode: int) -> int:
    """The reset seed of held-out episode ``episode`` (every task, every
    evaluation): disjoint from the training episodes' SeedSequence draws in
    practice, and a function of the recipe seed only."""
    return 1_000_000 * (seed + 1) + episode


def register() -> None:
    """Register the three environments (idempotent)."""
    for ident, cls in BENCHMARKS.values():
        if ident not in gym.registry:
            gym.register(
                id=ident,
                entry_point=f"dataset_recipes.mujoco_envs:{cls}",
                max_episode_steps=EPISODE_STEPS,
            )


register()
