"""Multi-task online evaluation: every task of a suite, batched, reproducible.

Why this package exists: d3rlpy evaluates one environment at a time, one
episode after another, with one forward pass per step of each episode, and on
whatever goal Meta-World happens to sample. Here all episodes of all tasks
advance together (one batched forward pass per environment step) and every
episode's goal is chosen explicitly, so two evaluations of the same model give
the same numbers. See docs/evaluation.md.

* :mod:`.policies` - :class:`MultiTaskPolicy` (what the evaluator drives) and
  the HarmoDT adapter :class:`HarmoDTPolicy`.
* :mod:`.results` - :class:`EvaluationResult` and its per-task/episode parts.
* :mod:`.envs` - held-out goals (:func:`goal_indices`) and the environments,
  in this process or in worker processes.
* :mod:`.evaluator` - :class:`MultiTaskEvaluator` and :func:`evaluate_multitask`.
* The one-hot adapters of d3rlpy's own algorithms (:class:`D3rlpyOneHotPolicy`,
  :func:`one_hot_episodes`, :func:`one_hot_replay_buffer`) live in
  :mod:`harmodt_algo.one_hot` and are re-exported here.

The ``X as X`` imports keep names importable from here that callers used
before the split (``_goal_selector``, ``EpisodeContexts``, ...) without adding
them to the public list.
"""

from ..contexts import EpisodeContexts as EpisodeContexts
from ..contexts import lookup_target_return as lookup_target_return
from ..one_hot import D3rlpyOneHotPolicy, one_hot_episodes, one_hot_replay_buffer
from .envs import MAX_EPISODES_PER_TASK, goal_indices
from .envs import _goal_selector as _goal_selector  # tests, benchmarks/eval_speed
from .evaluator import MultiTaskEvaluator, evaluate_multitask, resolve_target_returns
from .evaluator import TargetReturns as TargetReturns
from .policies import (
    HarmoDTPolicy,
    MultiTaskPolicy,
    ScriptedExperts,
    harmodt_batch_actions,
)
from .results import EpisodeResult, EvaluationResult, TaskResult, merge_results

__all__ = [
    "MultiTaskPolicy",
    "HarmoDTPolicy",
    "ScriptedExperts",
    "D3rlpyOneHotPolicy",
    "harmodt_batch_actions",
    "one_hot_episodes",
    "one_hot_replay_buffer",
    "EpisodeResult",
    "TaskResult",
    "EvaluationResult",
    "merge_results",
    "MultiTaskEvaluator",
    "evaluate_multitask",
    "resolve_target_returns",
    "goal_indices",
    "MAX_EPISODES_PER_TASK",
]
