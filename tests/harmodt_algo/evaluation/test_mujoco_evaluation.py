"""The evaluator and HarmoDT on a MuJoCo recipe (Cheetah-dir, built with a
tiny SAC): a held-out episode is the task's env reset with its held-out seed,
and a model trains on the data and acts in the env."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import minari
import numpy as np
import pytest

from dataset_recipes import make_env
from dataset_recipes.mujoco_build import build_mujoco_datasets, mujoco_dataset_ids
from dataset_recipes.mujoco_tasks import eval_reset_seed
from dataset_recipes.replay import SACSettings
from harmodt_algo import HarmoDT, HarmoDTConfig
from harmodt_algo.evaluation import MultiTaskEvaluator, goal_indices
from harmodt_algo.fit_loop import fit_quietly

STEPS = 20  # evaluation episodes cut at 20 steps


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        build_mujoco_datasets(
            "cheetah-dir",
            400,
            expert_episodes=2,
            chunk_episodes=1,
            sac=SACSettings(hidden_units=(32, 32), batch_size=32, random_steps=100),
            progress=False,
        )
        yield minari.load_dataset(mujoco_dataset_ids("cheetah-dir")["expert", "train"])


class Sway:
    """A fixed, observation-dependent policy (no RNG)."""

    def reset(
        self, task_ids: np.ndarray, task_names: Sequence[str] | None = None
    ) -> None:
        pass

    def act(
        self,
        observations: np.ndarray,
        rewards: np.ndarray,
        task_ids: np.ndarray,
        active: np.ndarray,
    ) -> np.ndarray:
        return np.tanh(observations[:, :6])  # (N, 6)


def test_a_held_out_episode_is_the_env_reset_with_its_seed(dataset: Any) -> None:
    with MultiTaskEvaluator(dataset, n_episodes=2, max_steps=STEPS) as ev:
        result = ev.evaluate(Sway())
    assert result.task_names == ["cheetah-dir-0", "cheetah-dir-1"]
    goals = goal_indices(2, 0)
    for task in result.tasks:
        env = make_env(dataset, task.task)
        for episode, goal in zip(task.episodes, goals, strict=True):
            assert episode.goal == goal and episode.length == STEPS
            obs, _ = env.reset(seed=eval_reset_seed(0, goal))
            total = 0.0
            for _ in range(STEPS):
                obs, r, _, _, _ = env.step(np.tanh(obs[None, :6])[0])
                total += float(r)
            assert episode.episode_return == pytest.approx(total, abs=1e-9)
            assert not episode.success  # no success signal: the return is the measure
        env.close()
    # the two directions reward opposite velocities: different returns
    assert result.tasks[0].mean_return != result.tasks[1].mean_return


def test_harmodt_trains_on_the_data_and_acts_in_the_env(dataset: Any) -> None:
    config = HarmoDTConfig(
        embed_size=16,
        num_layers=1,
        num_heads=2,
        context_size=5,
        batch_size=8,
        max_timestep=250,
        mask_interval=2,
        mask_batch_size=4,
    )
    algo = fit_quietly(HarmoDT(config), dataset, 4)
    assert algo.task_names == ("cheetah-dir-0", "cheetah-dir-1")
    with MultiTaskEvaluator(dataset, n_episodes=1, max_steps=STEPS) as ev:
        result = ev.evaluate(algo)
    assert all(np.isfinite(t.mean_return) for t in result.tasks)
    assert result.env_steps == 2 * STEPS
