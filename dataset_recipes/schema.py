"""The on-disk contract of a multi-task Minari dataset: one source of truth.

Producers (the recipes) and consumers (``harmodt_algo``'s data bridge, the
evaluator) import these names instead of repeating string literals.

A *multi-task* dataset is an ordinary Minari dataset in which every episode
belongs to exactly one task and every step says which:

- ``infos[INFO_TASK_ID]``   int64, shape (T+1,): index into the task list.
- ``infos[INFO_TASK_NAME]`` bytes (``|S``), shape (T+1,): the task's name
  (HDF5 cannot store numpy unicode, so names are ASCII bytes).
- ``infos[INFO_SUCCESS]``   float32, shape (T+1,): Meta-World's per-step success.

Dataset metadata (``dataset.storage.metadata``) carries:

- ``METADATA_TASKS``: the ordered task list; ``task_id`` indexes into it.
- ``METADATA_ENV``: how to rebuild each task's environment (see
  ``dataset_recipes.envs``).
- ``METADATA_STATS``: per-task measured success rate and mean return.
"""

from __future__ import annotations

INFO_TASK_ID = "task_id"
INFO_TASK_NAME = "task_name"
INFO_SUCCESS = "success"
#: Replay datasets only (a learner's buffer): the episode's index in the
#: learner's run and, per step, the env steps the learner had taken before it.
INFO_EPISODE_INDEX = "episode_index"
INFO_LEARNER_STEP = "learner_step"

METADATA_TASKS = "task_names"
METADATA_ENV = "metaworld_env"
METADATA_STATS = "task_stats"

#: All recipe datasets live under this Minari namespace.
NAMESPACE = "metaworld-v3"
#: Per-task reference returns: ``{task: {"ref_min_score", "ref_max_score", ...}}``
#: (random policy / scripted expert on held-out goals). The dataset-level Minari
#: ``ref_min_score`` / ``ref_max_score`` are their means over tasks.
METADATA_REF_SCORES = "task_ref_scores"
#: How the dataset was made: recipe version, quality, seed, episodes, command.
METADATA_RECIPE = "recipe"
#: Replay datasets only: the learner's settings and, per task, its progress
#: (success per tenth of the budget, greedy-policy success, CPU time).
METADATA_LEARNER = "learner"
