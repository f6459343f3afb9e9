"""One prepared check of HarmoDT on a GPU, in under 8 minutes, one table.

1. the test suite's device-marked tests on the device (``pytest -m device``
   with ``HARMODT_TEST_DEVICE``);
2. training throughput at the paper's size (embed 256, 6 layers, 8 heads, 50
   tasks): HarmoDT fp32 and bf16 against d3rlpy's DecisionTransformer,
   interleaved rounds, median;
3. the multi-task evaluator's speed (environment steps/s) on recipe data;
4. a short MT10 training run at the paper's size, evaluated.

    bash benchmarks/gpu_check.sh                # on a GPU machine
    bash benchmarks/gpu_check.sh --dry-run      # CPU, tiny sizes (CI runs this)

The dry run exercises every step with tiny sizes so the script stays runnable
on machines without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harmodt_algo  # noqa: F401  (before d3rlpy)

# isort: split
import minari
import torch
from rich.console import Console
from rich.table import Table

from harmodt_algo import HarmoDT, HarmoDTConfig, MultiTaskDataset, as_multitask_dataset
from harmodt_algo._quiet import d3rlpy_warnings_only
from harmodt_algo.evaluation import MultiTaskEvaluator
from harmodt_algo.fit_loop import fit_quietly
from harmodt_algo.options import parse_device

ROOT = Path(__file__).resolve().parents[1]
PAPER = dict(embed=256, layers=6, heads=8)
TINY = dict(embed=16, layers=1, heads=2)


def _throughput_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "train_throughput", ROOT / "benchmarks" / "train_throughput.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device_tests(device: str, dry: bool) -> tuple[str, str]:
    env = {**os.environ, "HARMODT_TEST_DEVICE": device}
    subset = ["-k", "fp32 and batch"] if dry else []  # the suite runs them all
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider"]
        + subset
        + [str(ROOT / "tests" / "harmodt_algo" / "test_device.py")],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return ("ok" if proc.returncode == 0 else "FAILED"), last


def throughput(device: str | bool, dry: bool) -> dict[str, float]:
    tp = _throughput_module()
    size = TINY if dry else PAPER
    args = argparse.Namespace(
        batch_size=8 if dry else 64,
        context=20,
        steps=2 if dry else 20,
        rounds=1 if dry else 3,
        warmup=1 if dry else 5,
        device=device,
        **size,
    )
    episodes = tp.make_episodes(3 if dry else 50, 1 if dry else 2, seed=0)
    data = MultiTaskDataset.from_episodes(episodes)
    steps = {"d3rlpy DT fp32": tp.d3rlpy_dt_step(tp.one_hot_buffer(episodes), args)}
    steps["HarmoDT fp32"], _ = tp.harmodt_step(data, args)
    steps["HarmoDT bf16"], _ = tp.harmodt_step(data, args, precision="bf16")
    rates: dict[str, float] = tp.interleaved_seq_per_s(steps, args)
    return rates


def build_data(suite: str, dry: bool) -> str:
    from dataset_recipes import build_metaworld_dataset

    result = build_metaworld_dataset(
        suite=None if dry else suite,
        tasks=["reach-v3", "button-press-topdown-v3"] if dry else None,
        quality="near-optimal",
        episodes_per_task=2 if dry else 10,
        max_episode_steps=40 if dry else 500,
        workers=1 if dry else min(16, os.cpu_count() or 1),
        progress=False,
    )
    return str(result.dataset_id)


def evaluator_speed(dataset_id: str, device: str | bool, dry: bool) -> float:
    dataset = minari.load_dataset(dataset_id)
    size = TINY if dry else PAPER
    algo = HarmoDT(
        HarmoDTConfig(
            embed_size=size["embed"],
            num_layers=size["layers"],
            num_heads=size["heads"],
            max_timestep=500,
        ),
        device=device,
    )
    algo.build_with_dataset(dataset)
    with MultiTaskEvaluator(
        dataset, n_episodes=1 if dry else 5, max_steps=20 if dry else None
    ) as evaluator:
        result = evaluator.evaluate(evaluator.policy_for(algo))
    return float(result.env_steps / result.elapsed_s)


def short_run(dataset_id: str, device: str | bool, dry: bool) -> tuple[float, float]:
    dataset = minari.load_dataset(dataset_id)
    data = as_multitask_dataset(dataset)
    size = TINY if dry else PAPER
    steps = 10 if dry else 3000
    algo = HarmoDT.from_preset(
        "harmodt-f",
        device=device,
        embed_size=size["embed"],
        num_layers=size["layers"],
        num_heads=size["heads"],
        batch_size=8 if dry else 64,
        max_timestep=500,
        mask_interval=5 if dry else 500,
    )
    start = time.perf_counter()
    fit_quietly(algo, data, steps)
    rate = steps / (time.perf_counter() - start)
    with MultiTaskEvaluator(
        dataset, n_episodes=1 if dry else 5, max_steps=20 if dry else None
    ) as evaluator:
        success = evaluator.evaluate(evaluator.policy_for(algo)).success_mean
    return rate, 100 * success


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu)")
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes: check the script"
    )
    args = parser.parse_args()
    dry = args.dry_run
    device_name = "cpu" if dry else args.device
    device = parse_device(device_name)
    os.environ.setdefault("MINARI_DATASETS_PATH", tempfile.mkdtemp(prefix="minari-"))
    console = Console()
    table = Table(
        title=f"HarmoDT GPU check ({'dry run, ' if dry else ''}{device_name})"
    )
    for col in ("check", "setting", "result", "seconds"):
        table.add_column(col)
    t0 = time.perf_counter()

    t = time.perf_counter()
    status, line = device_tests(device_name, dry)
    table.add_row("device tests", "pytest -m device", f"{status}: {line}", _s(t))

    t = time.perf_counter()
    rates = throughput(device, dry)
    ref = rates["d3rlpy DT fp32"]
    size = "tiny" if dry else "embed 256, 6 layers, 8 heads, 50 tasks, batch 64"
    for name, rate in rates.items():
        table.add_row(
            "training throughput",
            f"{name} ({size})",
            f"{rate:.0f} seq/s = {rate / ref:.2f}x d3rlpy DT",
            _s(t),
        )

    t = time.perf_counter()
    dataset_id = build_data("MT10", dry)
    table.add_row("recipe data", dataset_id, "built", _s(t))

    t = time.perf_counter()
    table.add_row(
        "evaluator",
        "untrained model, 5 goals per task",
        f"{evaluator_speed(dataset_id, device, dry):.0f} env steps/s",
        _s(t),
    )

    t = time.perf_counter()
    rate, success = short_run(dataset_id, device, dry)
    table.add_row(
        "short MT10 run",
        "harmodt-f, 3000 steps" if not dry else "harmodt-f, 10 steps",
        f"{rate:.1f} steps/s, success {success:.1f} %",
        _s(t),
    )
    console.print(table)
    console.print(
        f"total {time.perf_counter() - t0:.0f} s; torch {torch.__version__}, "
        f"cuda available: {torch.cuda.is_available()}"
    )
    return 0 if status == "ok" else 1


def _s(start: float) -> str:
    return f"{time.perf_counter() - start:.0f}"


if __name__ == "__main__":
    with d3rlpy_warnings_only():  # d3rlpy's per-fit lines would bury the table
        code = main()
    sys.exit(code)
