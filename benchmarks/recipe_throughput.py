"""Throughput of the dataset recipes (a benchmark, not a test).

Why: the recipe adds work on top of raw simulation (noise, bookkeeping, staged
files, reference rollouts, HDF5 writing, process start-up). One run measures,
on the same tasks and episodes:

(a) raw env stepping with the scripted expert, no recording (one process);
(b) the full recipe (``build_metaworld_dataset``) with 1 and with 2 workers,
    end to end, into a temporary Minari root.

It prints data transitions/s and the ratio to (a). The recipe also runs
reference rollouts (random + expert, 5 episodes each per task on held-out
goals) that are not data; the "env steps/s" column counts them too. They are
cached per (task, seed, episode length), so the second build of each pair
(another dataset id, same recipe) shows the cost of the data alone: stepping,
noise, staging, HDF5 writing and process start-up.

    .venv/bin/python benchmarks/recipe_throughput.py --suite MT5 --episodes-per-task 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
from rich.console import Console
from rich.table import Table

from dataset_recipes import build_metaworld_dataset, resolve_tasks
from dataset_recipes.envs import GoalEnvCache, train_goal
from dataset_recipes.rollout import REF_EPISODES


def raw_stepping(
    tasks: tuple[str, ...], episodes: int, steps: int
) -> tuple[int, float]:
    """Scripted expert, same goals as the recipe; times the stepping loop only."""
    from dataset_recipes.rollout import expert_policy

    cache = GoalEnvCache()
    total = 0
    seconds = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task in tasks:
            policy = expert_policy(task)
            for i in range(episodes):
                make_seed, goal = train_goal(0, i)
                env = cache.get(task, make_seed, goal)  # env build not timed
                start = time.perf_counter()
                obs, _ = env.reset()
                for _ in range(steps):
                    obs, *_ = env.step(np.clip(policy.get_action(obs), -1, 1))
                seconds += time.perf_counter() - start
                total += steps
    cache.close()
    return total, seconds


def recipe(
    tasks: tuple[str, ...], episodes: int, steps: int, workers: int, quality: str
) -> tuple[tuple[int, float], tuple[int, float]]:
    """Two builds in one fresh Minari root: end to end, then with cached references.

    The second build (same recipe, another dataset id) regenerates every episode
    but reuses the reference rollouts, which do not depend on the dataset.
    """
    timings = []
    with tempfile.TemporaryDirectory(prefix="recipe-bench-") as root:
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = root
        try:
            for k in range(2):
                start = time.perf_counter()
                result = build_metaworld_dataset(
                    tasks=tasks,
                    quality=quality,
                    episodes_per_task=episodes,
                    max_episode_steps=steps,
                    workers=workers,
                    dataset_id=f"bench/run{k}/{quality}-v0",
                    progress=False,
                )
                timings.append((result.transitions, time.perf_counter() - start))
        finally:
            if old is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = old
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="MT5")
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--episodes-per-task", type=int, default=4)
    parser.add_argument("--max-episode-steps", type=int, default=500)
    parser.add_argument("--quality", default="near-optimal")
    args = parser.parse_args()
    tasks = resolve_tasks(args.suite if args.tasks is None else None, args.tasks)
    n, steps = args.episodes_per_task, args.max_episode_steps
    ref_steps = len(tasks) * 2 * REF_EPISODES * steps

    rows = []
    raw_n, raw_s = raw_stepping(tasks, n, steps)
    raw_rate = raw_n / raw_s
    rows.append(("(a) raw env stepping, expert", raw_n, raw_s, raw_rate, raw_rate))
    for workers in (1, 2):
        (t, s), (t2, s2) = recipe(tasks, n, steps, workers, args.quality)
        rows.append(
            (f"(b) recipe, {workers} worker(s)", t, s, t / s, (t + ref_steps) / s)
        )
        rows.append(("    same, references cached", t2, s2, t2 / s2, t2 / s2))

    table = Table(
        title=f"{len(tasks)} tasks x {n} episodes x {steps} steps "
        f"({args.quality}; recipe also runs {ref_steps:,} reference steps, not data)"
    )
    for col in (
        "mode",
        "transitions",
        "seconds",
        "transitions/s",
        "env steps/s",
        "ratio",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode, t, s, rate, env_rate in rows:
        table.add_row(
            mode,
            f"{t:,}",
            f"{s:.1f}",
            f"{rate:,.0f}",
            f"{env_rate:,.0f}",
            f"{rate / raw_rate:.2f}x",
        )
    Console(width=120).print(table)
    print(f"cpu count: {os.cpu_count()}")


if __name__ == "__main__":
    main()
