"""Where a training step's time goes: per phase, for MTDT, HarmoDT
round-robin and HarmoDT mixed batches (a profile, not a test).

Phases, as ``HarmoDTImpl._update_tasks`` runs them: sampling (the batch drawn
and moved to torch), masks (θ ⊙ M_t for the batch's tasks), forward (the loss),
backward, optimizer (clip, AdamW, restoring frozen entries and their moments),
bookkeeping (the step's metrics). The same episodes and sizes as
``benchmarks/train_throughput.py`` (10 tasks, embed 128, 3 layers, batch 64,
context 20); median over steps after a warm-up, one torch thread.

    python benchmarks/train_profile.py --steps 60
    python benchmarks/train_profile.py --ops     # torch.profiler, mixed batches
"""

from __future__ import annotations

import harmodt_algo  # noqa: F401  (silences d3rlpy's gym notice first)

# isort: split

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from train_throughput import add_size_arguments, make_episodes, sized_config

from harmodt_algo import HarmoDT, MultiTaskDataset
from harmodt_algo.fit_loop import step_seed, task_schedule_ids
from harmodt_algo.optimizer import MaskedOptimizerWrapper

PHASES = ("sampling", "masks", "forward", "backward", "optimizer", "bookkeeping")


def profile(
    data: MultiTaskDataset, args: argparse.Namespace, **overrides: object
) -> dict[str, float]:
    """Median seconds per phase of one step."""
    cfg = sized_config(args, **overrides)
    algo = HarmoDT(cfg)
    algo._prepare(data)
    impl = algo.impl
    assert impl is not None
    task_index = algo._dataset_task_index(data)
    times: dict[str, list[float]] = defaultdict(list)
    for s in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        rng = np.random.default_rng(step_seed(0, s, 0))
        ids = task_schedule_ids(
            algo.config.task_schedule, algo.config.batch_size, s, data.num_tasks, rng
        )
        batch = algo._to_torch(data.sample_batch(ids, args.context, rng))
        task_ids = torch.as_tensor(task_index[ids])
        t1 = time.perf_counter()
        optim = impl.modules.optim
        optim.zero_grad()
        weights = impl.task_weights(task_ids)
        t2 = time.perf_counter()
        per_seq = impl.sequence_losses(batch, weights)
        loss = per_seq.mean()
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        if cfg.uses_masks and isinstance(optim, MaskedOptimizerWrapper):
            union = impl.modules.masks.union(weights.unique)
            optim.set_trainable_entries(
                {impl._covered[n]: union[n] for n in impl.masked_names}
            )
        optim.step()
        impl.modules.masks.step += 1
        t5 = time.perf_counter()
        float(loss.detach())
        per_task = torch.zeros(impl.num_tasks).index_add_(0, task_ids, per_seq.detach())
        per_task.tolist()
        t6 = time.perf_counter()
        if s >= args.warmup:
            for name, (a, b) in zip(
                PHASES,
                [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)],
                strict=True,
            ):
                times[name].append(b - a)
    return {name: float(np.median(times[name])) for name in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    add_size_arguments(parser)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--ops", action="store_true", help="top operators of mixed steps instead"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = MultiTaskDataset.from_episodes(
        make_episodes(args.tasks, args.episodes_per_task, seed=args.tasks)
    )
    variants: dict[str, dict[str, object]] = {
        "MTDT (dense, no prompt)": {
            "mask_init": "dense",
            "mask_interval": 0,
            "prompt_length": 0,
        },
        "HarmoDT round-robin, no prompt": {"prompt_length": 0},
        "HarmoDT round-robin (default)": {},
        "HarmoDT mixed": {"task_schedule": "mixed"},
        "HarmoDT mixed, no prompt": {"task_schedule": "mixed", "prompt_length": 0},
    }
    if args.ops:
        with torch.profiler.profile() as prof:
            profile(data, args, task_schedule="mixed")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        return
    table = Table(title=f"ms per step by phase ({args.tasks} tasks, 1 thread)")
    table.add_column("variant")
    for name in (*PHASES, "total"):
        table.add_column(name, justify="right")
    for label, overrides in variants.items():
        phases = profile(data, args, **overrides)
        total = sum(phases.values())
        table.add_row(
            label, *(f"{1000 * phases[n]:.1f}" for n in PHASES), f"{1000 * total:.1f}"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
