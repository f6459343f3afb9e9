"""The evaluator: every episode of every task, batched, reproducible.

Why one batched loop: a multi-task model has to be scored on *every* task
(design §7: 10 episodes per task, each on a different goal, success if
``info["success"]`` is ever true). Here all episodes of a wave advance
together, one policy call per environment step, and every episode's goal is
chosen explicitly (:func:`~harmodt_algo.evaluation.envs.goal_indices`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from d3rlpy.algos.qlearning import QLearningAlgoBase

from dataset_recipes import schema

from ..data import MultiTaskDataset, as_multitask_dataset
from ..harmodt import HarmoDT
from ..one_hot import D3rlpyOneHotPolicy
from .envs import _EnvShard, _ProcessStepper, _Stepper, goal_indices
from .policies import HarmoDTPolicy, MultiTaskPolicy
from .results import EpisodeResult, EvaluationResult, TaskResult

__all__ = [
    "TargetReturns",
    "MultiTaskEvaluator",
    "evaluate_multitask",
    "resolve_target_returns",
]

TargetReturns = float | Mapping[str, float] | MultiTaskDataset | None


def resolve_target_returns(
    tasks: Sequence[str],
    target_returns: TargetReturns,
    dataset: MultiTaskDataset | None = None,
) -> dict[str, float]:
    """The target (initial return-to-go) of each task.

    Rule: a float is used for every task; a mapping must name every task; with
    ``None`` each task gets its best episode return in ``dataset``
    (``MultiTaskDataset.max_return``, the usual Decision-Transformer practice),
    and so does a ``MultiTaskDataset`` passed as ``target_returns``.
    """
    if isinstance(target_returns, MultiTaskDataset):
        dataset, target_returns = target_returns, None
    if target_returns is None:
        if dataset is None:
            raise ValueError(
                "no target returns: pass target_returns (a float or a per-task "
                "mapping) or the dataset they come from"
            )
        missing = [t for t in tasks if t not in dataset.task_names]
        if missing:
            raise ValueError(
                f"the dataset has no episodes of {missing} to take a target return "
                f"from; its tasks: {list(dataset.task_names)}"
            )
        return {t: dataset.max_return(t) for t in tasks}
    if isinstance(target_returns, Mapping):
        missing = [t for t in tasks if t not in target_returns]
        if missing:
            raise ValueError(
                f"target_returns has no entry for {missing}; it has "
                f"{sorted(target_returns)}"
            )
        return {t: float(target_returns[t]) for t in tasks}
    return {t: float(target_returns) for t in tasks}


def _split_source(source: Any) -> tuple[dict[str, Any], Any]:
    """(the env part of the metadata, the Minari dataset or None)."""
    dataset = None
    if isinstance(source, str):
        import minari

        dataset = minari.load_dataset(source)
        metadata: Mapping[str, Any] = dataset.storage.metadata
    elif isinstance(source, Mapping):
        metadata = source
    elif getattr(source, "storage", None) is not None:
        dataset = source
        metadata = source.storage.metadata
    else:
        raise TypeError(
            "expected a dataset_recipes MinariDataset, its id, or its metadata "
            f"mapping; got {type(source).__name__}"
        )
    if schema.METADATA_ENV not in metadata or schema.METADATA_TASKS not in metadata:
        raise ValueError(
            f"the metadata has no {schema.METADATA_ENV!r} / "
            f"{schema.METADATA_TASKS!r}: not a dataset_recipes dataset"
        )
    # only what make_env needs: small and picklable (for worker processes)
    slim = {
        schema.METADATA_TASKS: [str(t) for t in metadata[schema.METADATA_TASKS]],
        schema.METADATA_ENV: dict(metadata[schema.METADATA_ENV]),
    }
    return slim, dataset


class MultiTaskEvaluator:
    """Evaluate a multi-task policy on every task of a recipe dataset.

    .. code-block:: python

        evaluator = MultiTaskEvaluator(dataset, n_episodes=10)
        result = evaluator.evaluate(algo)   # EvaluationResult
        rich.print(result.table())
        metrics = evaluator(algo)           # {"success_reach-v3": 1.0, ...}

    Args:
        dataset_or_metadata: a ``dataset_recipes`` Minari dataset, its id, or its
            metadata mapping (then ``target_returns`` is needed for HarmoDT).
        tasks: the tasks to evaluate (default: all of the dataset's).
        n_episodes: episodes per task, each on a different held-out goal (≤ 50).
        seed: picks the goals (:func:`goal_indices`); same seed, same numbers.
        max_steps: cut episodes at this many steps (default: the env's limit).
        target_returns: HarmoDT's target per task (see
            :func:`resolve_target_returns`; default: the dataset's best return).
        workers: 0 steps the envs in this process; ``W > 0`` in W processes.
        max_parallel: most episodes in flight at once (bounds memory: each
            Meta-World env holds ~20 MB); episodes beyond it run in later waves.
        stop_on_success: end an episode at its first success. The success
            rate is the same quantity ("ever succeeded"), reached in fewer env
            steps; returns and lengths are then those of the shortened
            episodes (recorded in the result). Not bit-identical to a
            full-length run: the policy's batch shrinks as episodes end.

    The environments (and worker processes) are built on first use and kept
    for later calls; ``close()`` (or ``with``) releases them.
    """

    def __init__(
        self,
        dataset_or_metadata: Any,
        tasks: Sequence[str] | None = None,
        n_episodes: int = 10,
        seed: int = 0,
        max_steps: int | None = None,
        target_returns: TargetReturns = None,
        workers: int = 0,
        max_parallel: int = 100,
        stop_on_success: bool = False,
    ):
        self._metadata, self._minari = _split_source(dataset_or_metadata)
        self.suite_tasks: list[str] = list(self._metadata[schema.METADATA_TASKS])
        if tasks is None:
            tasks = list(self.suite_tasks)
        if isinstance(tasks, str):
            tasks = [tasks]
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in self.suite_tasks]
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown}; known tasks: {self.suite_tasks}"
            )
        if not tasks:
            raise ValueError(f"no tasks to evaluate; known tasks: {self.suite_tasks}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks has duplicates: {tasks}")
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, int):
            raise TypeError(f"n_episodes must be an int, got {n_episodes!r}")
        self.goals = goal_indices(n_episodes, seed)  # validates n_episodes
        if max_steps is not None and max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {max_steps}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if max_parallel <= 0:
            raise ValueError(f"max_parallel must be > 0, got {max_parallel}")
        if isinstance(target_returns, Mapping):
            resolve_target_returns(tasks, target_returns)  # fail fast
        self.tasks = tasks
        self.n_episodes = n_episodes
        self.seed = seed
        self.max_steps = max_steps
        self.workers = workers
        self.max_parallel = max_parallel
        self.stop_on_success = bool(stop_on_success)
        self._target_returns = target_returns
        self._dataset: MultiTaskDataset | None = None
        self._stepper: _Stepper | None = None
        self.last_result: EvaluationResult | None = None

    # ---------------------------------------------------------------- targets
    def target_returns(self) -> dict[str, float]:
        """HarmoDT's target return per evaluated task (the documented rule)."""
        target = self._target_returns
        if target is None and self._dataset is None:
            if self._minari is None:
                raise ValueError(
                    "no target returns: this evaluator was given dataset metadata "
                    "only; pass target_returns (a float or a per-task mapping) or "
                    "the dataset itself"
                )
            self._dataset = as_multitask_dataset(self._minari)
        return resolve_target_returns(self.tasks, target, self._dataset)

    def policy_for(self, agent: Any) -> MultiTaskPolicy:
        """``agent`` as a policy: HarmoDT → :class:`HarmoDTPolicy`, a d3rlpy
        Q-learning-style algorithm → :class:`D3rlpyOneHotPolicy` (one-hot over
        the dataset's tasks), a :class:`MultiTaskPolicy` → itself."""
        if isinstance(agent, HarmoDT):
            return HarmoDTPolicy(agent, self.target_returns())
        if isinstance(agent, QLearningAlgoBase):
            return D3rlpyOneHotPolicy(agent, len(self.suite_tasks))
        if isinstance(agent, MultiTaskPolicy):
            return agent
        raise TypeError(
            f"cannot evaluate a {type(agent).__name__}: pass a HarmoDT, a d3rlpy "
            "Q-learning-style algorithm, or a MultiTaskPolicy"
        )

    # ------------------------------------------------------------- evaluation
    def _get_stepper(self) -> _Stepper:
        if self._stepper is None:
            if self.workers > 0:
                self._stepper = _ProcessStepper(self._metadata, self.workers)
            else:
                self._stepper = _EnvShard(self._metadata)
        return self._stepper

    def plan(self, tasks: Sequence[str] | None = None) -> list[tuple[str, int, int]]:
        """Every episode as ``(task, episode index, goal)``, in run order
        (episode-major, so each wave mixes all tasks)."""
        tasks = self.tasks if tasks is None else tasks
        return [(task, i, goal) for i, goal in enumerate(self.goals) for task in tasks]

    def evaluate(
        self, agent: Any, tasks: Sequence[str] | None = None
    ) -> EvaluationResult:
        """Run every episode of every task (or of ``tasks``, a subset of
        :attr:`tasks`, with the same goals); see :class:`EvaluationResult`."""
        tasks = self.tasks if tasks is None else list(tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown or not tasks:
            raise ValueError(
                f"tasks must be a non-empty subset of {self.tasks}, got {tasks}"
            )
        policy = self.policy_for(agent)
        stepper = self._get_stepper()
        plan = self.plan(tasks)
        start = time.perf_counter()
        results: dict[str, list[EpisodeResult]] = {t: [] for t in tasks}
        total_steps = 0
        for first in range(0, len(plan), self.max_parallel):
            wave = plan[first : first + self.max_parallel]
            for res in self._run_wave(policy, stepper, wave):
                results[res.task].append(res)
                total_steps += res.length
        task_results = tuple(
            TaskResult(t, tuple(sorted(results[t], key=lambda e: e.index)))
            for t in tasks
        )
        self.last_result = EvaluationResult(
            tasks=task_results,
            n_episodes=self.n_episodes,
            seed=self.seed,
            env_steps=total_steps,
            elapsed_s=time.perf_counter() - start,
            stop_on_success=self.stop_on_success,
        )
        return self.last_result

    def _run_wave(
        self,
        policy: MultiTaskPolicy,
        stepper: _Stepper,
        wave: Sequence[tuple[str, int, int]],
    ) -> list[EpisodeResult]:
        n = len(wave)
        task_ids = np.array(
            [self.suite_tasks.index(task) for task, _, _ in wave], np.int64
        )  # (N,)
        policy.reset(task_ids, self.suite_tasks)
        obs = stepper.start([(task, goal) for task, _, goal in wave])  # (N, obs)
        rewards = np.zeros(n)  # (N,) previous reward
        returns = np.zeros(n)  # (N,)
        lengths = np.zeros(n, np.int64)  # (N,)
        success = np.zeros(n, bool)  # (N,) ever succeeded
        active = np.ones(n, bool)  # (N,)
        limit = self.max_steps
        while active.any():
            actions = policy.act(obs, rewards, task_ids, active)  # (N, A)
            obs, rewards, done, succ = stepper.step(np.asarray(actions), active)
            rewards = np.where(active, rewards, 0.0)
            returns += rewards
            lengths += active
            success |= succ & active
            if limit is not None:
                done |= lengths >= limit
            if self.stop_on_success:
                done |= success
            active &= ~done
        return [
            EpisodeResult(
                task=task,
                index=index,
                goal=goal,
                success=bool(success[i]),
                episode_return=float(returns[i]),
                length=int(lengths[i]),
            )
            for i, (task, index, goal) in enumerate(wave)
        ]

    def __call__(self, algo: Any, dataset: Any = None) -> dict[str, float]:
        """Training hook: evaluate ``algo`` and return flat metrics
        (``success_<task>``, ``return_<task>``, ``success_mean``,
        ``return_mean``). ``dataset`` is accepted (and ignored) for d3rlpy's
        evaluator signature."""
        return self.evaluate(algo).metrics()

    # -------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the environments and stop worker processes."""
        stepper = getattr(self, "_stepper", None)  # None if __init__ failed
        if stepper is not None:
            self._stepper = None
            stepper.close()

    def __enter__(self) -> MultiTaskEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: best effort
            warnings.warn("MultiTaskEvaluator.close() failed", stacklevel=1)

    def __repr__(self) -> str:
        return (
            f"MultiTaskEvaluator(tasks={self.tasks}, n_episodes={self.n_episodes}, "
            f"seed={self.seed}, max_steps={self.max_steps}, workers={self.workers}"
            + (", stop_on_success=True)" if self.stop_on_success else ")")
        )


def evaluate_multitask(
    agent: Any,
    dataset_or_metadata: Any,
    *,
    tasks: Sequence[str] | None = None,
    n_episodes: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    target_returns: TargetReturns = None,
    workers: int = 0,
    max_parallel: int = 100,
    stop_on_success: bool = False,
) -> EvaluationResult:
    """One-shot :class:`MultiTaskEvaluator` (envs are closed afterwards)."""
    with MultiTaskEvaluator(
        dataset_or_metadata,
        tasks=tasks,
        n_episodes=n_episodes,
        seed=seed,
        max_steps=max_steps,
        target_returns=target_returns,
        workers=workers,
        max_parallel=max_parallel,
        stop_on_success=stop_on_success,
    ) as evaluator:
        return evaluator.evaluate(agent)
