"""Training throughput: HarmoDT vs d3rlpy's DecisionTransformer, one run.

Both train at the same architecture (embed, layers, heads, MLP 4x), context
and batch size on the same episodes (Meta-World shapes: 39-dim observations,
4-dim actions, 500-step episodes). d3rlpy's DT sees the task as a one-hot
appended to the observation (how a single-task d3rlpy algorithm is made
multi-task); its state encoder is one Linear+ReLU of the embed size.

Measured per configuration: sequences/s of the training loop (sampling +
update, as in ``fit``). Methods are timed in interleaved rounds (A, B, C, A,
B, C, ...) and the median round is reported, so a load spike on the machine
hits every method alike instead of skewing one ratio. For HarmoDT also the
cost of one mask update, reported as its share of training time at the
configured interval:
``t_mask / (interval · t_step + t_mask)``.

    python benchmarks/train_throughput.py                # 10 and 50 tasks
    python benchmarks/train_throughput.py --tasks 10 --steps 30
    python benchmarks/train_throughput.py --tasks 10 --json  # rows as JSON
    python benchmarks/train_throughput.py --no-surgery   # without pcgrad/cagrad

Columns: the ratio to d3rlpy's DT and to the dense ``mtdt`` preset (what a
mask costs), both from the same run. stdout holds the table (or, with
``--json``, the JSON list) and nothing else; d3rlpy's warnings go to stderr.
"""

from __future__ import annotations

import harmodt_algo  # noqa: F401  (silences d3rlpy's gym notice first)

# isort: split

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import d3rlpy
import numpy as np
import torch
from d3rlpy.dataset import Episode, InfiniteBuffer, ReplayBuffer
from d3rlpy.models import VectorEncoderFactory
from rich.console import Console
from rich.table import Table

from harmodt_algo import PRESETS, HarmoDT, HarmoDTConfig, MultiTaskDataset
from harmodt_algo._quiet import d3rlpy_warnings_only
from harmodt_algo.fit_loop import step_seed, task_schedule_ids
from harmodt_algo.options import parse_device

OBS, ACT, EP_LEN = 39, 4, 500


def make_episodes(num_tasks: int, per_task: int, seed: int) -> dict[str, list[Episode]]:
    rng = np.random.default_rng(seed)
    return {
        f"task-{t}": [
            Episode(
                observations=rng.normal(size=(EP_LEN, OBS)).astype(np.float32),
                actions=np.tanh(rng.normal(size=(EP_LEN, ACT))).astype(np.float32),
                rewards=rng.random((EP_LEN, 1)).astype(np.float32),
                terminated=False,
            )
            for _ in range(per_task)
        ]
        for t in range(num_tasks)
    }


def one_hot_buffer(episodes: dict[str, list[Episode]]) -> ReplayBuffer:
    num_tasks = len(episodes)
    flat = []
    for t, eps in enumerate(episodes.values()):
        onehot = np.zeros((EP_LEN, num_tasks), dtype=np.float32)
        onehot[:, t] = 1.0
        for ep in eps:
            obs = np.concatenate([np.asarray(ep.observations), onehot], axis=1)
            flat.append(Episode(obs, ep.actions, ep.rewards, ep.terminated))
    return ReplayBuffer(InfiniteBuffer(), episodes=flat)


def d3rlpy_dt_step(
    buffer: ReplayBuffer, args: argparse.Namespace
) -> Callable[[], None]:
    dt = d3rlpy.algos.DecisionTransformerConfig(
        batch_size=args.batch_size,
        context_size=args.context,
        num_heads=args.heads,
        num_layers=args.layers,
        encoder_factory=VectorEncoderFactory(hidden_units=[args.embed]),
        optim_factory=d3rlpy.optimizers.GPTAdamWFactory(
            weight_decay=1e-4, clip_grad_norm=0.25
        ),
        max_timestep=1000,
    ).create(device=args.device)
    dt.build_with_dataset(buffer)

    def step() -> None:
        batch = buffer.sample_trajectory_batch(args.batch_size, length=args.context)
        dt.update(batch)

    return step


def interleaved_seq_per_s(
    steps: dict[str, Callable[[], None]], args: argparse.Namespace
) -> dict[str, float]:
    """Median sequences/s per method over interleaved timing rounds."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    rounds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            _sync(args.device)
            elapsed = time.perf_counter() - start
            rounds[name].append(args.steps * args.batch_size / elapsed)
    return {name: float(np.median(v)) for name, v in rounds.items()}


def _sync(device: str | bool) -> None:
    """Wait for queued GPU work, so wall time measures it."""
    if device is not False and torch.cuda.is_available():
        torch.cuda.synchronize()


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and batch size every training benchmark measures at: 10
    tasks' data, embed 128, 3 layers, batch 64, context 20 by default."""
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)


def sized_config(args: argparse.Namespace, **overrides: object) -> HarmoDTConfig:
    """The benchmark's size (batch, context, embed, layers, heads) + overrides."""
    return HarmoDTConfig(
        batch_size=args.batch_size,
        context_size=args.context,
        embed_size=args.embed,
        num_layers=args.layers,
        num_heads=args.heads,
        **overrides,  # type: ignore[arg-type]
    )


def harmodt_step(
    data: MultiTaskDataset, args: argparse.Namespace, **overrides: object
) -> tuple[Callable[[], None], HarmoDT]:
    cfg = sized_config(args, **overrides)
    algo = HarmoDT(cfg, device=args.device)
    algo._prepare(data)
    task_index = algo._dataset_task_index(data)
    counter = iter(range(10**9))

    def step() -> None:
        s = next(counter)
        rng = np.random.default_rng(step_seed(0, s, 0))
        ids = task_schedule_ids(
            algo.config.task_schedule, algo.config.batch_size, s, data.num_tasks, rng
        )
        algo.update(data.sample_batch(ids, args.context, rng), task_index[ids])

    return step, algo


def mask_update_seconds(algo: HarmoDT, data: MultiTaskDataset, repeats: int) -> float:
    """Mean wall time of one mask update (all tasks' harmony gradients)."""
    assert algo.impl is not None
    algo.impl.modules.masks.schedule_horizon.fill_(1000)
    algo.update_masks(data, 500)  # warm-up
    start = time.perf_counter()
    for i in range(repeats):
        algo.update_masks(data, 500 + i)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    add_size_arguments(parser)
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mask-repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0 = default)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--bf16", action="store_true", help="also HarmoDT with precision=bf16"
    )
    parser.add_argument(
        "--no-surgery",
        dest="surgery",
        action="store_false",
        help="leave out the pcgrad and cagrad rows (one backward per task: slow)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the rows as a JSON list, and nothing else",
    )
    args = parser.parse_args()
    args.device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with d3rlpy_warnings_only(sys.stderr):  # stdout holds the table or JSON only
        rows = [row for n in args.tasks for row in measure(n, args)]
    if args.json:
        print(json.dumps(rows))
        return
    console = Console()
    if not console.is_terminal:  # a file or pipe: one line per row, unwrapped
        console = Console(width=140)
    table = Table(title="Training throughput (sequences/s, higher is better)")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    for row in rows:
        share = row["mask_update_share"]
        table.add_row(
            str(row["tasks"]),
            row["method"],
            f"{row['seq_per_s']:.0f}",
            f"{row['vs_d3rlpy_dt']:.2f}",
            f"{row['vs_mtdt']:.2f}",
            "-" if share is None else f"{row['mask_update_ms']:.0f} ms",
            "-" if share is None else f"{100 * share:.1f} % @{row['mask_interval']}",
        )
    console.print(table)
    console.print(
        f"batch {args.batch_size}, context {args.context}, embed {args.embed}, "
        f"layers {args.layers}, heads {args.heads}, "
        f"median of {args.rounds} interleaved rounds x {args.steps} steps, "
        f"torch threads {torch.get_num_threads()}, device {args.device or 'cpu'}"
    )


COLUMNS = (
    "tasks",
    "method",
    "seq/s",
    "vs d3rlpy DT",
    "vs mtdt",
    "mask update",
    "share @interval",
)
REFERENCE = "d3rlpy DT (one-hot)"
MTDT = "MTDT preset (dense)"


def measure(num_tasks: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per method at ``num_tasks``: sequences/s, the ratios to d3rlpy's
    DT and to the dense ``mtdt`` preset (same run), and for a masked method
    the mask update's cost and share of training time at its interval."""
    episodes = make_episodes(num_tasks, args.episodes_per_task, seed=num_tasks)
    data = MultiTaskDataset.from_episodes(episodes)
    variants: dict[str, dict[str, object]] = {
        "HarmoDT round_robin (default)": {"task_schedule": "round_robin"},
        "HarmoDT mixed": {"task_schedule": "mixed"},
        "HarmoDT, no prompt": {"prompt_length": 0},
        # the mixed path's mask cost without the prompt's extra tokens
        "HarmoDT mixed, no prompt": {"task_schedule": "mixed", "prompt_length": 0},
        MTDT: {"mask_init": "dense", "mask_interval": 0, "prompt_length": 0},
        # running-mean task gradients: the mask update needs no backward pass
        "HarmoDT+ preset (accumulated)": dict(PRESETS["harmodt-plus"]),
    }
    for surgery in ("pcgrad", "cagrad") if args.surgery else ():
        # one backward pass per task
        variants[f"{surgery} preset (dense, mixed)"] = dict(PRESETS[surgery])
    if args.bf16:
        variants["HarmoDT round_robin, bf16"] = {"precision": "bf16"}
    torch.manual_seed(0)
    steps = {REFERENCE: d3rlpy_dt_step(one_hot_buffer(episodes), args)}
    algos = {}
    for label, overrides in variants.items():
        steps[label], algos[label] = harmodt_step(data, args, **overrides)
    rates = interleaved_seq_per_s(steps, args)
    rows = []
    for label, rate in rates.items():
        row: dict[str, Any] = {
            "tasks": num_tasks,
            "method": label,
            "seq_per_s": rate,
            "vs_d3rlpy_dt": rate / rates[REFERENCE],
            "vs_mtdt": rate / rates[MTDT],
            "mask_update_ms": None,
            "mask_update_share": None,
            "mask_interval": None,
        }
        algo = algos.get(label)
        if algo is not None and algo.config.uses_masks and algo.config.mask_interval:
            mask_s = mask_update_seconds(algo, data, args.mask_repeats)
            interval = algo.config.mask_interval
            t_step = args.batch_size / rate
            row["mask_update_ms"] = 1000 * mask_s
            row["mask_update_share"] = mask_s / (interval * t_step + mask_s)
            row["mask_interval"] = interval
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
