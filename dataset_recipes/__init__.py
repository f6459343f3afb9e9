"""Deterministic recipes that turn Meta-World (v3) into Minari datasets.

Public API (see ``docs/recipes.md``):

* :func:`build_metaworld_dataset` - build (or resume) a dataset;
* :func:`dataset_id` - the id of a recipe (suite or tasks, quality);
* :func:`make_env` - rebuild a task's evaluation environment from a dataset;
* :func:`list_suites`, :func:`all_tasks`, :data:`QUALITIES` - the choices;
* :func:`measure_quality` - measure a quality level without writing a dataset;
* :func:`build_replay_datasets` - record a SAC learner per task (the ``replay``
  quality: ``near-optimal-replay`` and ``sub-optimal-replay``);
* :class:`RecipeError` - bad input (a ``ValueError``).

Heavy imports (metaworld, minari, mujoco) happen lazily inside the functions.
"""

__version__ = "0.1.0"

from .builder import (  # noqa: E402
    BuildResult,
    build_metaworld_dataset,
    measure_quality,
    stats_of,
)
from .card import LearnerCurve, TaskStats  # noqa: E402
from .envs import make_env  # noqa: E402
from .errors import BuildInterrupted, RecipeError  # noqa: E402
from .ids import RecipeId, dataset_id, parse_dataset_id  # noqa: E402
from .minari_store import datasets_root  # noqa: E402
from .mujoco_build import (  # noqa: E402
    MujocoBuildResult,
    build_mujoco_datasets,
    mujoco_dataset_ids,
)
from .mujoco_tasks import BENCHMARKS, benchmark_tasks  # noqa: E402  (registers)
from .qualities import (  # noqa: E402
    QUALITIES,
    QUALITY_NAMES,
    REPLAY_DATASETS,
    REPLAY_QUALITY,
    Quality,
    get_quality,
)
from .replay import SACSettings  # noqa: E402
from .replay_build import (  # noqa: E402
    DEFAULT_ENV_STEPS_PER_TASK,
    ReplayBuildResult,
    build_replay_datasets,
    replay_dataset_ids,
)
from .suites import SUITE_NAMES, all_tasks, list_suites, resolve_tasks  # noqa: E402

__all__ = [
    "BENCHMARKS",
    "DEFAULT_ENV_STEPS_PER_TASK",
    "QUALITIES",
    "QUALITY_NAMES",
    "REPLAY_DATASETS",
    "REPLAY_QUALITY",
    "LearnerCurve",
    "ReplayBuildResult",
    "SACSettings",
    "benchmark_tasks",
    "MujocoBuildResult",
    "build_mujoco_datasets",
    "mujoco_dataset_ids",
    "build_replay_datasets",
    "replay_dataset_ids",
    "SUITE_NAMES",
    "BuildInterrupted",
    "BuildResult",
    "RecipeId",
    "Quality",
    "RecipeError",
    "TaskStats",
    "__version__",
    "all_tasks",
    "build_metaworld_dataset",
    "dataset_id",
    "datasets_root",
    "get_quality",
    "list_suites",
    "make_env",
    "measure_quality",
    "parse_dataset_id",
    "resolve_tasks",
    "stats_of",
]
