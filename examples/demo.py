"""The main job end to end (``make demo``): data → training → evaluation.

1. Build a small MT5 near-optimal dataset with the recipes (reused when it
   already exists in ``MINARI_DATASETS_PATH``).
2. Train HarmoDT-F on it with the ``harmodt`` CLI, evaluating every task on
   held-out goals at the end of each epoch (logged through d3rlpy's logger).
3. Print the per-task success table and where the model, logs and plots went.

Sized for the slower 2-core CPU (≤ 10 minutes: a 0.2 M-parameter model, batch
16, 2000 steps); prints its wall time. Same as running:

    harmodt-recipes metaworld --suite MT5 --quality near-optimal --episodes-per-task 10
    harmodt train --dataset metaworld-v3/mt5/near-optimal-v0 --preset harmodt-f \\
        --embed-size 64 --layers 2 --heads 4 --batch-size 16 --steps 2000 \\
        --eval-every 1000 --eval-episodes 5 --logdir runs --name demo
"""

from __future__ import annotations

import harmodt_algo  # noqa: F401  (silences d3rlpy's gym notice first)

# isort: split

import argparse
import time

import minari
from rich.console import Console

from dataset_recipes import build_metaworld_dataset, dataset_id
from harmodt_algo import cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--logdir", default="runs")
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()

    ds_id = dataset_id("MT5", "near-optimal")
    if ds_id in minari.list_local_datasets():
        console.print(f"[bold]1/2[/] reusing dataset [cyan]{ds_id}[/]")
    else:
        console.print(f"[bold]1/2[/] building dataset [cyan]{ds_id}[/]")
        result = build_metaworld_dataset(
            "MT5",
            quality="near-optimal",
            episodes_per_task=args.episodes_per_task,
            workers=2,
        )
        console.print(result.card)

    console.print("[bold]2/2[/] training HarmoDT-F and evaluating every task")
    code = cli.main(
        [
            "train",
            "--dataset", ds_id,
            "--preset", "harmodt-f",
            "--embed-size", "64", "--layers", "2", "--heads", "4",
            "--batch-size", "16",
            "--steps", str(args.steps),
            "--eval-every", str(args.eval_every),
            "--eval-episodes", str(args.eval_episodes),
            "--logdir", args.logdir,
            "--name", "demo",
        ]
    )  # fmt: skip
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    console.print(f"demo wall time: {int(minutes)} min {seconds:.0f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
