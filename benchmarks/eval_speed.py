"""Evaluation speed: the batched multi-task evaluator vs its floor and d3rlpy.

Measured in one run, on the same tasks, held-out goals and episode lengths:

(a) the floor: the scripted Meta-World experts
    (``metaworld.policies.ENV_POLICY_MAP[task]().get_action(obs)``) stepping
    the same environments for the same number of steps, a plain loop with no
    model (a1), and the same experts driven through the evaluator's batched
    loop (a2: the evaluator's own overhead without a model);
(b) ``MultiTaskEvaluator`` on a HarmoDT (all episodes of all tasks advance
    together, one batched forward pass per env step), with ``workers=0``
    (envs stepped in this process) and, if asked, ``workers=W``;
(c) d3rlpy's sequential ``evaluate_transformer_with_environment`` over the same
    tasks and episodes, through ``algo.for_task(t).as_stateful_wrapper(...)``
    (one forward pass per step of each episode).

Prints b/a (target ≤ 1.5) and c/b, and where (b)'s time goes: the policy
(model forward + context bookkeeping) vs the environments. Environment
construction is timed separately and excluded from (a), (b) and (c).

The HarmoDT is trained for a few steps on a tiny recipe dataset built in a
temporary Minari store (speed does not depend on how well it is trained), or
loaded with ``--model PATH`` (a ``d3rlpy.load_learnable`` file; pass the
dataset it was trained on with ``--dataset ID``).

    python benchmarks/eval_speed.py                              # MT5, 2 ep, 100 steps
    python benchmarks/eval_speed.py --episodes 10 --steps 500 --workers 0,2
    python benchmarks/eval_speed.py --embed 64 --layers 2 --context 10
"""

from __future__ import annotations

import harmodt_algo  # noqa: F401  (silences d3rlpy's gym notice first)

# isort: split

import argparse
import atexit
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import d3rlpy
import minari
import numpy as np
import torch
from d3rlpy.metrics import evaluate_transformer_with_environment
from metaworld.policies import ENV_POLICY_MAP
from rich.console import Console
from rich.table import Table

from dataset_recipes import build_metaworld_dataset, make_env, resolve_tasks
from harmodt_algo import HarmoDT, HarmoDTConfig
from harmodt_algo.evaluation import (
    HarmoDTPolicy,
    MultiTaskEvaluator,
    ScriptedExperts,
    _goal_selector,
)
from harmodt_algo.fit_loop import fit_quietly

warnings.filterwarnings("ignore", message="Constant.*too high")


class TimedPolicy:
    """Wraps a policy and adds up the time spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def reset(
        self, task_ids: np.ndarray, task_names: Sequence[str] | None = None
    ) -> None:
        self.inner.reset(task_ids, task_names)

    def act(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.act(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class ExpertFloor:
    """(a1) a plain loop: one env per task, episodes one after another."""

    def __init__(self, dataset: Any, tasks: list[str], goals: list[int]) -> None:
        self.goals = goals
        self.envs = {}
        for task in tasks:
            env = make_env(dataset, task)
            selector = _goal_selector(env)
            selector.toggle_sample_tasks_on_reset(False)
            self.envs[task] = (env, selector.tasks)

    def run(self, steps: int) -> tuple[float, int]:
        total = 0
        start = time.perf_counter()
        for task, (env, task_goals) in self.envs.items():
            expert = ENV_POLICY_MAP[task]()  # type: ignore[abstract]
            for goal in self.goals:
                env.unwrapped.set_task(task_goals[goal])  # type: ignore[attr-defined]
                obs, _ = env.reset()
                for _ in range(steps):
                    obs, _, terminated, truncated, _ = env.step(
                        np.clip(expert.get_action(obs), -1, 1)
                    )
                    total += 1
                    if terminated or truncated:
                        break
        return time.perf_counter() - start, total

    def close(self) -> None:
        for env, _ in self.envs.values():
            env.close()


class D3rlpySequential:
    """(c) d3rlpy's evaluator, task after task (env construction excluded)."""

    def __init__(self, algo: HarmoDT, dataset: Any, tasks: list[str]) -> None:
        self.algo = algo
        self.envs = {t: make_env(dataset, t) for t in tasks}

    def run(self, targets: dict[str, float], episodes: int) -> float:
        start = time.perf_counter()
        for task, env in self.envs.items():
            actor = self.algo.for_task(task).as_stateful_wrapper(targets[task])
            evaluate_transformer_with_environment(actor, env, n_trials=episodes)
        return time.perf_counter() - start

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


def build_or_load(args: argparse.Namespace, console: Console) -> tuple[Any, HarmoDT]:
    if args.dataset:
        dataset = minari.load_dataset(args.dataset)
    else:
        store = tempfile.mkdtemp(prefix="eval-speed-")
        atexit.register(shutil.rmtree, store, ignore_errors=True)
        os.environ["MINARI_DATASETS_PATH"] = store
        tasks = list(resolve_tasks(None if args.tasks else args.suite, args.tasks))
        start = time.perf_counter()
        result = build_metaworld_dataset(
            tasks=tasks,
            quality="expert",
            episodes_per_task=args.train_episodes,
            max_episode_steps=args.steps,
            progress=False,
        )
        dataset = minari.load_dataset(result.dataset_id)
        console.print(
            f"built {result.dataset_id} ({len(tasks)} tasks × "
            f"{args.train_episodes} episodes × {args.steps} steps) in "
            f"{time.perf_counter() - start:.1f} s"
        )
    if args.model:
        algo = d3rlpy.load_learnable(args.model)
        assert isinstance(algo, HarmoDT)
    else:
        config = HarmoDTConfig(
            batch_size=16,
            embed_size=args.embed,
            num_layers=args.layers,
            num_heads=args.heads,
            context_size=args.context,
            max_timestep=max(args.steps, 500),
            mask_interval=0,
        )
        start = time.perf_counter()
        algo = fit_quietly(HarmoDT(config), dataset, args.train_steps)
        console.print(
            f"trained HarmoDT embed {args.embed}, {args.layers} layers, "
            f"{args.heads} heads, context {args.context} for {args.train_steps} "
            f"steps in {time.perf_counter() - start:.1f} s"
        )
    return dataset, algo


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="MT5", help="MT1/MT5/MT10/MT30/MT50")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks")
    parser.add_argument("--episodes", type=int, default=2, help="per task")
    parser.add_argument("--steps", type=int, default=100, help="episode length")
    parser.add_argument("--workers", default="0", help="comma list, e.g. 0,2")
    parser.add_argument("--dataset", default=None, help="existing dataset id")
    parser.add_argument("--model", default=None, help="d3rlpy learnable path")
    parser.add_argument("--train-episodes", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=20)
    # the spec's default architecture (HarmoDTConfig defaults)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile (b)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    console = Console()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    console.print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")

    dataset, algo = build_or_load(args, console)
    workers = [int(w) for w in args.workers.split(",")]
    suite = list(dataset.storage.metadata["task_names"])
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else suite
    figures: dict[str, Any] = {
        "tasks": len(tasks),
        "episodes_per_task": args.episodes,
        "steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "model": {
            "embed": algo.config.embed_size,
            "layers": algo.config.num_layers,
            "context": algo.config.context_size,
        },
    }

    evaluators = {
        w: MultiTaskEvaluator(
            dataset,
            tasks=tasks,
            n_episodes=args.episodes,
            max_steps=args.steps,
            workers=w,
        )
        for w in workers
    }
    first = evaluators[workers[0]]
    targets = first.target_returns()
    for w, evaluator in evaluators.items():  # builds (and keeps) the envs
        start = time.perf_counter()
        evaluator.evaluate(ScriptedExperts())
        console.print(
            f"workers={w}: env build + first expert run "
            f"{time.perf_counter() - start:.2f} s"
        )
    floor = ExpertFloor(dataset, tasks, first.goals)
    sequential = D3rlpySequential(algo, dataset, tasks)
    warm = HarmoDTPolicy(algo, targets)  # torch warm-up
    warm.reset(np.zeros(1, np.int64), None)
    warm.act(np.zeros((1, 39)), np.zeros(1), np.zeros(1, np.int64), np.ones(1, bool))

    # interleaved rounds: a load spike hits every method alike; medians reported
    runs: dict[str, list[float]] = {}
    shares: dict[str, list[float]] = {}
    env_steps = 0
    success = 0.0
    for r in range(args.repeats):
        seconds, env_steps = floor.run(args.steps)
        runs.setdefault("a1", []).append(seconds)
        if 0 in evaluators:
            start = time.perf_counter()
            a2 = evaluators[0].evaluate(ScriptedExperts())
            runs.setdefault("a2", []).append(time.perf_counter() - start)
            assert a2.env_steps == env_steps, (a2.env_steps, env_steps)
        variants = [(w, False) for w in workers]
        if 0 in evaluators:
            variants.append((0, True))
        for w, per_task in variants:
            evaluator = evaluators[w]
            name = f"b{w}" + ("_per_task" if per_task else "")
            timed = TimedPolicy(HarmoDTPolicy(algo, targets, per_task_forward=per_task))
            profiler = cProfile.Profile() if args.profile and r == 0 else None
            start = time.perf_counter()
            if profiler:
                profiler.enable()
            result = evaluator.evaluate(timed)
            if profiler:
                profiler.disable()
            seconds = time.perf_counter() - start
            runs.setdefault(name, []).append(seconds)
            shares.setdefault(name, []).append(timed.seconds / seconds)
            assert result.env_steps == env_steps
            success = result.success_mean
            if profiler:
                console.print(f"profile of (b), workers={w}:")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        runs.setdefault("c", []).append(sequential.run(targets, args.episodes))
    for evaluator in evaluators.values():
        evaluator.close()
    floor.close()
    sequential.close()

    med = {k: float(np.median(v)) for k, v in runs.items()}
    share = {k: float(np.median(v)) for k, v in shares.items()}
    a1, c = med["a1"], med["c"]
    b_times = {k: v for k, v in med.items() if k.startswith("b")}
    console.print(
        f"HarmoDT success (not trained to succeed): {success:.2f}; "
        f"{args.repeats} interleaved rounds, medians"
    )
    table = Table(
        title=f"{len(tasks)} tasks × {args.episodes} episodes × {args.steps} steps "
        f"= {env_steps} env steps"
    )
    for col in ("run", "seconds", "env steps/s", "÷ (a1)"):
        table.add_column(col, justify="right" if col != "run" else "left")

    def row(name: str, seconds: float) -> None:
        table.add_row(
            name, f"{seconds:.2f}", f"{env_steps / seconds:,.0f}", f"{seconds / a1:.2f}"
        )

    row("(a1) scripted expert, plain loop", a1)
    if "a2" in med:
        row("(a2) scripted expert through the evaluator", med["a2"])
    for key, seconds in b_times.items():
        n_workers = key[1:].split("_")[0]
        how = ", one pass per task" if key.endswith("_per_task") else ""
        row(
            f"(b) evaluator, HarmoDT, workers={n_workers}{how} "
            f"(policy {100 * share[key]:.0f} %)",
            seconds,
        )
    row("(c) d3rlpy sequential evaluate_transformer", c)
    console.print(table)
    best_key = min(b_times, key=b_times.__getitem__)
    best = b_times[best_key]
    console.print(
        f"b/a = {best / a1:.2f} (target ≤ 1.5), c/b = {c / best:.2f} "
        f"(best b: {best_key})"
    )
    if "b0" in b_times and best_key != "b0":
        console.print(
            f"one mixed-task pass per step, workers=0: b/a = {b_times['b0'] / a1:.2f}, "
            f"c/b = {c / b_times['b0']:.2f}"
        )
    figures.update(
        {
            "env_steps": env_steps,
            "rounds": args.repeats,
            "a1_expert_plain_s": a1,
            "a2_expert_evaluator_s": med.get("a2"),
            "b_evaluator_s": b_times,
            "b_policy_share": share,
            "c_d3rlpy_sequential_s": c,
            "b_over_a": best / a1,
            "c_over_b": c / best,
        }
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
