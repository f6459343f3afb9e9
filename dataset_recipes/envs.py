"""Meta-World environments for recipes: goal seeding, env specs and ``make_env``.

Why this module exists: Meta-World ignores ``reset(seed=...)``. A task's goals
(object and target positions) are 50 vectors pre-sampled from the *global* numpy
RNG seeded by the ``seed`` given to ``metaworld.MT1`` / ``metaworld.make_mt_envs``
(the *make-seed*). To make every episode reproducible from
``(task, seed, episode index)`` and to keep evaluation goals out of the data,
recipes address goals explicitly:

* episode ``i`` of a build with recipe seed ``s`` runs goal ``i % 50`` of
  make-seed ``s * 100_000 + i // 50`` (the *training* make-seeds);
* evaluation uses make-seed ``s * 100_000 + 99_999``, which no training block of
  any recipe seed uses, so evaluation goals are held out of every recipe dataset.

The data are generated on the raw task class (no wrappers, fastest), the
evaluation environment is built through ``metaworld.make_mt_envs`` (a string
entry point, so its :class:`gymnasium.envs.registration.EnvSpec` serialises and
``MinariDataset.recover_environment`` works). Both give bit-identical first
observations for the same goal (checked in the tests).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from . import schema
from .errors import RecipeError

#: Goals Meta-World samples per make-seed (``metaworld._N_GOALS``).
GOALS_PER_MAKE_SEED = 50
#: Make-seeds of recipe seed ``s`` are ``s * SEED_STRIDE + block``.
SEED_STRIDE = 100_000
#: The block reserved for evaluation goals; never used for data.
EVAL_BLOCK = SEED_STRIDE - 1
#: Largest recipe seed (numpy seeds must stay below 2**32).
MAX_SEED = (2**32 - 1 - EVAL_BLOCK) // SEED_STRIDE
#: Largest number of episodes per task (training blocks 0 .. EVAL_BLOCK - 1).
MAX_EPISODES_PER_TASK = EVAL_BLOCK * GOALS_PER_MAKE_SEED
#: Meta-World's episode length.
MAX_EPISODE_STEPS = 500
#: The entry point stored in every env spec.
ENTRY_POINT = "metaworld:make_mt_envs"

#: Observations are stored as float32 in an unbounded box: Meta-World's own
#: observation space has goal bounds [0, 0, 0] and rejects every real observation.
OBSERVATION_SPACE = gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float32)
ACTION_SPACE = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)


def stable_key(text: str) -> int:
    """A 32-bit integer from ``text`` that is the same in every process and run.

    (Python's ``hash()`` is salted per process and must not seed anything.)
    """
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


def check_seed(seed: int) -> int:
    """Validate a recipe seed (``0 <= seed <= MAX_SEED``)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise RecipeError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise RecipeError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    return int(seed)


def train_goal(seed: int, episode_index: int) -> tuple[int, int]:
    """``(make_seed, goal_index)`` of training episode ``episode_index``."""
    block, goal = divmod(episode_index, GOALS_PER_MAKE_SEED)
    if block >= EVAL_BLOCK:
        raise RecipeError(
            f"episode index {episode_index} exceeds {MAX_EPISODES_PER_TASK} per task"
        )
    return seed * SEED_STRIDE + block, goal


def train_make_seeds(seed: int, episodes_per_task: int) -> list[int]:
    """All training make-seeds a build of ``episodes_per_task`` episodes uses."""
    blocks = -(-episodes_per_task // GOALS_PER_MAKE_SEED)
    return [seed * SEED_STRIDE + b for b in range(blocks)]


def eval_make_seed(seed: int) -> int:
    """The held-out make-seed of recipe seed ``seed`` (evaluation goals)."""
    return seed * SEED_STRIDE + EVAL_BLOCK


def env_spec_dict(task: str, make_seed: int, max_episode_steps: int) -> dict[str, Any]:
    """A JSON-able, EnvSpec-like description of one task's environment."""
    return {
        "id": f"MetaWorld/{task}",
        "entry_point": ENTRY_POINT,
        "kwargs": {"name": task, "seed": int(make_seed)},
        "max_episode_steps": int(max_episode_steps),
    }


def env_spec_from_dict(spec: Mapping[str, Any]) -> EnvSpec:
    """Turn :func:`env_spec_dict`'s output into a gymnasium ``EnvSpec``."""
    return EnvSpec(
        id=str(spec["id"]),
        entry_point=str(spec["entry_point"]),
        kwargs=dict(spec["kwargs"]),
        max_episode_steps=int(spec["max_episode_steps"]),
        # Meta-World's cached observation space rejects real goals: the checker
        # would only warn about that.
        disable_env_checker=True,
    )


def env_metadata(
    tasks: Sequence[str], seed: int, episodes_per_task: int, max_episode_steps: int
) -> dict[str, Any]:
    """The ``schema.METADATA_ENV`` value: how to rebuild every task's env."""
    eval_seed = eval_make_seed(seed)
    return {
        "entry_point": ENTRY_POINT,
        "max_episode_steps": int(max_episode_steps),
        "goals_per_make_seed": GOALS_PER_MAKE_SEED,
        "train_make_seeds": train_make_seeds(seed, episodes_per_task),
        "eval_make_seed": eval_seed,
        "goal_rule": (
            f"episode i uses goal i % {GOALS_PER_MAKE_SEED} of make-seed "
            f"seed * {SEED_STRIDE} + i // {GOALS_PER_MAKE_SEED}; evaluation uses "
            f"make-seed seed * {SEED_STRIDE} + {EVAL_BLOCK} (held out)"
        ),
        "tasks": {t: env_spec_dict(t, eval_seed, max_episode_steps) for t in tasks},
    }


def _metadata_of(dataset_or_metadata: Any) -> Mapping[str, Any]:
    if isinstance(dataset_or_metadata, Mapping):
        return dataset_or_metadata
    if isinstance(dataset_or_metadata, str | os.PathLike):
        import minari

        return minari.load_dataset(str(dataset_or_metadata)).storage.metadata
    storage = getattr(dataset_or_metadata, "storage", None)
    if storage is not None:
        return storage.metadata  # type: ignore[no-any-return]
    raise TypeError(
        "make_env expects a MinariDataset, a dataset id or a metadata mapping, "
        f"got {type(dataset_or_metadata).__name__}"
    )


def make_env(
    dataset_or_metadata: Any,
    task_name: str,
    *,
    seed: int | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """Rebuild the evaluation environment of one task of a recipe dataset.

    Args:
        dataset_or_metadata: a ``MinariDataset``, a local dataset id, or the
            dataset's metadata mapping (``dataset.storage.metadata``).
        task_name: one of the dataset's tasks (``metadata[schema.METADATA_TASKS]``).
        seed: the Meta-World *make-seed*, i.e. which set of 50 goals the env
            samples from on reset. ``None`` (default) uses the dataset's held-out
            evaluation make-seed (``metadata[METADATA_ENV]["eval_make_seed"]``);
            pass one of ``train_make_seeds`` to replay training goals. (Reset
            seeds are ignored by Meta-World; the goal drawn on each reset is a
            deterministic function of the make-seed.)
        render_mode: forwarded to Meta-World (``"rgb_array"``, ``"human"``, ...).

    Returns:
        A ``gymnasium.Env`` truncated at the dataset's episode length: Meta-World's
        (39-dim float64 observations, 4-dim actions), or for a MuJoCo recipe
        (``harmodt-recipes mujoco``) the task's Cheetah or Ant env.
    """
    metadata = _metadata_of(dataset_or_metadata)
    env_meta = metadata.get(schema.METADATA_ENV)
    if not isinstance(env_meta, Mapping) or "tasks" not in env_meta:
        raise RecipeError(
            f"no {schema.METADATA_ENV!r} entry in the dataset metadata: "
            "not a dataset_recipes dataset"
        )
    specs: Mapping[str, Any] = env_meta["tasks"]
    if task_name not in specs:
        raise RecipeError(
            f"task {task_name!r} is not in this dataset; its tasks: {', '.join(specs)}"
        )
    spec = dict(specs[task_name])
    if seed is not None:
        if env_meta.get("family") == "mujoco":
            raise RecipeError(
                "seed is Meta-World's make-seed; a MuJoCo task takes its seed "
                "on reset: make_env(dataset, task).reset(seed=...)"
            )
        spec["kwargs"] = {**spec["kwargs"], "seed": int(seed)}
    kwargs: dict[str, Any] = {}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(env_spec_from_dict(spec), **kwargs)


class GoalEnvCache:
    """Raw Meta-World envs with their 50 goals, keyed by ``(task, make_seed)``.

    Building a task's goal list costs about 0.5 s (50 resets), so a worker keeps
    the last few. Reusing an env across episodes is safe: ``set_task`` + ``reset``
    restore the full simulator state (checked: bit-identical episodes).
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._goals: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        self._envs: dict[str, Any] = {}

    def get(self, task: str, make_seed: int, goal_index: int) -> Any:
        """The raw env of ``task`` with goal ``goal_index`` of ``make_seed`` set."""
        import metaworld

        key = (task, make_seed)
        if key not in self._goals:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._goals[key] = list(metaworld.MT1(task, seed=make_seed).train_tasks)
            while len(self._goals) > self.capacity:
                self._goals.popitem(last=False)
        else:
            self._goals.move_to_end(key)
        if task not in self._envs:
            if len(self._envs) >= self.capacity:
                self._envs.pop(next(iter(self._envs))).close()
            self._envs[task] = metaworld.ALL_V3_ENVIRONMENTS[task]()
        env = self._envs[task]
        env.set_task(self._goals[key][goal_index])
        return env

    def close(self) -> None:
        """Close every cached env."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._goals.clear()
