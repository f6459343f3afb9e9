"""Episodes are pure functions of (task, seed, quality, index); goals; make_env."""

from __future__ import annotations

import pickle

import metaworld
import numpy as np
import pytest

from dataset_recipes import RecipeError, make_env
from dataset_recipes.envs import (
    GoalEnvCache,
    env_metadata,
    eval_make_seed,
    train_goal,
    train_make_seeds,
)
from dataset_recipes.rollout import rollout_episode

STEPS = 20


def test_goal_rule() -> None:
    assert train_goal(0, 0) == (0, 0)
    assert train_goal(0, 49) == (0, 49)
    assert train_goal(0, 50) == (1, 0)
    assert train_goal(3, 120) == (300_002, 20)
    assert eval_make_seed(3) == 399_999
    assert eval_make_seed(3) not in train_make_seeds(3, 10_000)
    assert train_make_seeds(0, 101) == [0, 1, 2]


def test_episode_is_reproducible_and_independent_of_history() -> None:
    cache = GoalEnvCache()
    # Run other episodes in the same env first: the result must not change.
    for i in (0, 1):
        rollout_episode("push-v3", 0, i, "sub-optimal", STEPS, cache=cache)
    a = rollout_episode("push-v3", 0, 2, "sub-optimal", STEPS, cache=cache)
    b = rollout_episode("push-v3", 0, 2, "sub-optimal", STEPS)  # fresh env
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert a.observations.shape == (STEPS + 1, 39)
    assert a.observations.dtype == np.float32 and a.actions.dtype == np.float32
    assert np.abs(a.actions).max() <= 1.0
    # Another seed or index changes the goal (last 3 obs dims).
    c = rollout_episode("push-v3", 0, 3, "sub-optimal", STEPS, cache=cache)
    d = rollout_episode("push-v3", 1, 2, "sub-optimal", STEPS, cache=cache)
    assert not np.array_equal(a.observations[0, -3:], c.observations[0, -3:])
    assert not np.array_equal(a.observations[0, -3:], d.observations[0, -3:])
    cache.close()


def test_eval_goals_are_held_out() -> None:
    def goals(make_seed: int) -> set[bytes]:
        tasks = metaworld.MT1("reach-v3", seed=make_seed).train_tasks
        return {pickle.loads(t.data)["rand_vec"].tobytes() for t in tasks}

    train = goals(0) | goals(1)
    held_out = goals(eval_make_seed(0))
    assert len(held_out) == 50 and not (train & held_out)


def test_make_env_replays_training_goal_and_defaults_to_eval_goals() -> None:
    meta = {
        "task_names": ["reach-v3"],
        "metaworld_env": env_metadata(["reach-v3"], 0, 4, STEPS),
    }
    first = rollout_episode("reach-v3", 0, 1, "expert", STEPS).observations[0]
    # With a training make-seed, the env samples among the 50 training goals:
    # one of the resets must reproduce the dataset's first observation exactly.
    env = make_env(meta, "reach-v3", seed=train_goal(0, 1)[0])
    seen = [env.reset()[0].astype(np.float32) for _ in range(150)]
    assert any(np.array_equal(first, o) for o in seen)
    env.close()
    # Default: held-out goals, never the training one; truncated at STEPS.
    env = make_env(meta, "reach-v3")
    obs, _ = env.reset()
    assert obs.shape == (39,)
    assert env.spec is not None and env.spec.kwargs["seed"] == eval_make_seed(0)
    assert env.spec.max_episode_steps == STEPS
    for _ in range(STEPS):
        obs, _, _, truncated, _ = env.step(env.action_space.sample())
    assert truncated
    env.close()
    with pytest.raises(RecipeError, match="not in this dataset"):
        make_env(meta, "push-v3")
