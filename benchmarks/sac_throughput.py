"""Throughput of the replay recipe's SAC learner, one torch thread (a benchmark,
not a test).

Why: the replay quality's budget (env steps per task) is set by what d3rlpy's
SAC costs on a CPU. One run measures, on one task:

(a) raw env stepping with uniform random actions (the reference);
(b) ``SAC.sample_action`` on one observation (what acting costs per step);
(c) ``SAC.update`` on a batch from a d3rlpy replay buffer, for the recipe's
    settings and two cheaper ones (updates/s);
(d) the recipe's learner loop itself (``run_replay_job``) for a few episodes
    after its warm-up: env steps/s with one update per step.

    .venv/bin/python benchmarks/sac_throughput.py --task push-v3
    .venv/bin/python benchmarks/sac_throughput.py --task push-v3 --mujoco

``--mujoco`` adds (e): the same loop on the MuJoCo recipes' HalfCheetah and Ant
tasks (``harmodt-recipes mujoco``), against (d) in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from dataset_recipes.envs import GoalEnvCache
from dataset_recipes.replay import (
    ReplayJob,
    SACSettings,
    new_buffer,
    run_replay_job,
)


def env_steps_per_s(task: str, steps: int = 1000) -> float:
    cache = GoalEnvCache()
    env = cache.get(task, 0, 0)
    env.reset()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for t in range(steps):
        if t % 500 == 0:
            env = cache.get(task, 0, t // 500)
            env.reset()
        env.step(rng.uniform(-1, 1, 4))
    return steps / (time.perf_counter() - start)


def sac_rates(settings: SACSettings, updates: int = 200) -> tuple[float, float]:
    """(updates/s, sample_action calls/s)."""
    sac = settings.create()
    buffer = new_buffer()
    rng = np.random.default_rng(0)
    for t in range(1000):
        obs = rng.normal(size=39).astype(np.float32)
        buffer.append(obs, rng.uniform(-1, 1, 4).astype(np.float32), 1.0)
        if t % 500 == 499:
            buffer.clip_episode(False)
    for _ in range(5):  # warm-up
        sac.update(buffer.sample_transition_batch(settings.batch_size))
    start = time.perf_counter()
    for _ in range(updates):
        sac.update(buffer.sample_transition_batch(settings.batch_size))
    update_rate = updates / (time.perf_counter() - start)
    obs = rng.normal(size=(1, 39)).astype(np.float32)
    start = time.perf_counter()
    for _ in range(500):
        sac.sample_action(obs)
    return update_rate, 500 / (time.perf_counter() - start)


def loop_steps_per_s(task: str, episodes: int) -> float:
    """The learner loop after its warm-up: the first episode is random (a
    500-step warm-up), the rest learn one update per step. The greedy
    evaluations at each tenth of a budget are left out (a 200,000-step build
    runs 10 x 10 of them, about 2 % of its steps)."""
    from unittest import mock

    settings = SACSettings(random_steps=500)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch("dataset_recipes.replay._greedy_success", return_value=0.0),
    ):
        job = ReplayJob(
            task, 0, episodes + 1, 500, episodes + 1, settings, tmp, f"{tmp}/r.npz"
        )
        run_replay_job(replace(job, episodes=1, chunk_episodes=1))  # refs, warm-up
        start = time.process_time()
        run_replay_job(replace(job, folder=f"{tmp}/b"))
        spent = time.process_time() - start
    return 500 * (episodes + 1) / spent


def mujoco_loop_steps_per_s(benchmark: str, episodes: int) -> float:
    """The same loop on a MuJoCo recipe's task (``harmodt-recipes mujoco``):
    one random 200-step episode, then one update per step; greedy
    evaluations left out, CPU time of the learner's chunks only."""
    from unittest import mock

    from dataset_recipes.mujoco_learner import MujocoJob, env_sizes, run_mujoco_job

    sizes = env_sizes(benchmark)
    settings = SACSettings(random_steps=200)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch(
            "dataset_recipes.mujoco_learner._greedy_returns",
            side_effect=lambda sac, env, seed, n: np.zeros(n),
        ),
    ):
        job = MujocoJob(
            benchmark, 0, 0, episodes + 1, episodes + 1, 1, settings, tmp, *sizes
        )
        done = run_mujoco_job(job)
        with np.load(job.chunk_path(0)) as z:
            steps = int(z["lengths"].sum())
    return steps / done.cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="push-v3")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument(
        "--mujoco",
        action="store_true",
        help="also the loop on HalfCheetah (cheetah-vel) and Ant (ant-dir), "
        "20 learning episodes of 200 steps each",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    sys.modules.setdefault("gym_notices", None)  # type: ignore[arg-type]
    torch.set_num_threads(1)
    env_rate = env_steps_per_s(args.task)
    table = Table(title=f"SAC on {args.task}, 1 torch thread")
    for col in ("what", "per second", "vs raw env steps"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row("(a) raw env steps, random actions", f"{env_rate:,.0f}", "1.00x")
    default = SACSettings()
    variants = {
        "recipe: 256x256, batch 256": default,
        "256x256, batch 128": replace(default, batch_size=128),
        "400x400, batch 256": replace(default, hidden_units=(400, 400)),
    }
    for name, settings in variants.items():
        updates, acts = sac_rates(settings)
        table.add_row(f"(c) updates, {name}", f"{updates:,.1f}", "")
        if settings == default:
            table.add_row("(b) sample_action, 1 obs", f"{acts:,.0f}", "")
    loop = loop_steps_per_s(args.task, args.episodes)
    table.add_row(
        "(d) learner loop (1 update/step, CPU time)",
        f"{loop:,.1f}",
        f"{loop / env_rate:.3f}x",
    )
    hours = 1e5 / loop / 3600
    table.add_row("    = CPU-hours per 100,000 env steps", f"{hours:.2f}", "")
    if args.mujoco:
        for benchmark in ("cheetah-vel", "ant-dir"):
            rate = mujoco_loop_steps_per_s(benchmark, 20)
            table.add_row(
                f"(e) learner loop on {benchmark} (CPU time)",
                f"{rate:,.1f}",
                f"{rate / loop:.2f}x (d)",
            )
            table.add_row(
                "    = CPU-hours per 100,000 env steps", f"{1e5 / rate / 3600:.2f}", ""
            )
    Console().print(table)


if __name__ == "__main__":
    main()
