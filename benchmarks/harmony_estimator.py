r"""Is the mask choice signal or noise? Each harmony estimator, measured twice.

For every estimator of the task gradients that the mask update can use, this
script computes the drop and grow sets of one update **twice, from
independent data**, at the same model state, and prints

* their Jaccard overlap (mean over tasks) beside the overlap two *random*
  sets of the same size would have (chance): a choice that is signal repeats
  itself, noise does not;
* the immediate change of a probe loss (dropout off, 64 fixed sequences of
  every task, each through its own mask) when that update is applied to the
  model the estimate was taken at, beside a *random* update of the same size
  (same k per task, same protected entries).

Estimators (one row each):

* ``batch-16`` — a fresh batch of 16 sequences per task, dropout on (the
  ``batch`` estimator with this project's former defaults);
* ``batch-8-clip`` — 8 sequences, dropout on, each task's gradient clipped to
  0.25 before the consensus (the release's procedure);
* ``batch-128-nodrop`` — 128 sequences per task, dropout off;
* ``accum-W`` — the ``accumulated`` estimator: the running mean of the
  training gradients over a window of W training steps (round robin, batch
  16, so W/T steps per task). "Independent data" = two continuations of
  training from the same checkpoint that sample different sequences.

Scoring: HarmoDT-F's (fisher importance, γ = 10, 1-D parameters protected);
rows marked ``+loo+rank`` use the leave-one-out consensus and rank
normalisation (the ``harmodt-plus-v0`` preset's scoring). k = 100 entries per
task (the release's k_max).

    python benchmarks/harmony_estimator.py                  # MT5 sub-optimal
    python benchmarks/harmony_estimator.py --dataset metaworld-v3/mt10/sub-optimal-v0

The dataset must exist (``harmodt-recipes metaworld --suite MT5 --quality
sub-optimal --episodes-per-task 50``). About 3 minutes on one core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harmodt_algo  # noqa: F401  (silences d3rlpy's old-gym notice)

# isort: split
import d3rlpy
import minari
import numpy as np
import torch

from harmodt_algo import HarmoDT
from harmodt_algo import masks as mask_ops
from harmodt_algo._quiet import d3rlpy_warnings_only
from harmodt_algo.data import MultiTaskDataset, as_multitask_dataset
from harmodt_algo.fit_loop import fit_quietly
from harmodt_algo.reproducibility import (
    batch_gradients,
    chance_jaccard,
    continued_gradients,
    jaccard,
    update_sets,
)

SIZE = dict(embed_size=64, num_layers=2, num_heads=4, batch_size=16)
K = 100


def _fit(algo: HarmoDT, data: MultiTaskDataset, steps: int) -> None:
    fit_quietly(algo, data, steps)


def _copy(path: Path, seed: int = 0, **options: Any) -> HarmoDT:
    """The checkpoint again, with other mask-update options or data seed."""
    algo = d3rlpy.load_learnable(str(path))
    assert isinstance(algo, HarmoDT) and algo.impl is not None
    algo.config.seed = seed
    algo.set_mask_update(**options)
    return algo


def _probe_loss(algo: HarmoDT, batches: list[Any]) -> float:
    impl = algo.impl
    assert impl is not None
    net = impl.modules.transformer
    net.eval()
    with torch.no_grad():
        total = 0.0
        for t, batch in enumerate(batches):
            ids = torch.full((batch.actions.shape[0],), t, dtype=torch.long)
            total += float(impl.sequence_losses(batch, impl.task_weights(ids)).mean())
    net.train()
    return total / len(batches)


def _loss_change(
    algo: HarmoDT, new: torch.Tensor, batches: list[Any]
) -> tuple[float, float]:
    """Held-out loss change of applying ``new`` and of a random update of the
    same size per task."""
    impl = algo.impl
    assert impl is not None
    masks = impl.modules.masks
    old = impl.flat_masks().clone()
    base = _probe_loss(algo, batches)
    shapes = {n: tuple(impl._masked[n].shape) for n in impl.masked_names}

    def apply(flat: torch.Tensor) -> float:
        masks.assign(mask_ops.unflatten_masks(flat, shapes, impl.masked_names))
        value = _probe_loss(algo, batches) - base
        masks.assign(mask_ops.unflatten_masks(old, shapes, impl.masked_names))
        return value

    k = (old & ~new).sum(1)  # (T,)
    g = torch.Generator().manual_seed(0)
    rand = mask_ops.drop_and_grow(
        old,
        torch.rand(old.shape, generator=g),
        torch.rand(old.shape, generator=g),
        k,
        protected=impl.protected_entries(),
    )
    return apply(new), apply(rand)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="metaworld-v3/mt5/sub-optimal-v0")
    parser.add_argument("--warmup-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = as_multitask_dataset(minari.load_dataset(args.dataset))
    base = HarmoDT.from_preset(
        "harmodt-f",
        **SIZE,
        harmony_estimator="accumulated",
        mask_interval=0,
        prompt_length=0,
    )
    _fit(base, data, args.warmup_steps)
    assert base.impl is not None
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "base.d3"
    base.save(str(path))
    rng = np.random.default_rng(12345)  # fixed probe batches, 64 sequences a task
    probe = [
        base._to_torch(data.sample_batch(np.full(64, t), base.config.context_size, rng))
        for t in range(data.num_tasks)
    ]
    num_tasks = data.num_tasks
    old = base.impl.flat_masks()
    protected = base.impl.protected_entries()
    droppable = float((old & ~protected).sum(1).double().mean())
    inactive = float((~old).sum(1).double().mean())

    rows: list[tuple[str, float, float, float, float]] = []

    def measure(name: str, g1: torch.Tensor, g2: torch.Tensor, algo: HarmoDT) -> None:
        """Drop/grow sets from two estimates, and the loss change of applying
        the first to ``algo`` (the model that estimate was taken at)."""
        d1, r1 = update_sets(algo, g1, K)
        d2, r2 = update_sets(algo, g2, K)
        dl, dl_rand = _loss_change(algo, (old & ~d1) | r1, probe)
        rows.append((name, jaccard(d1, d2), jaccard(r1, r2), dl, dl_rand))
        print(f"  measured {name}", flush=True)

    plus = {"harmony_leave_one_out": True, "score_normalization": "rank"}
    for name, size, dropout, clip in (
        ("batch-16", 16, True, 0.0),
        ("batch-8-clip", 8, True, 0.25),
        ("batch-128-nodrop", 128, False, 0.0),
    ):
        algo = _copy(path, harmony_dropout=dropout, harmony_grad_clip=clip)
        g1 = batch_gradients(algo, data, size, seed=1)
        g2 = batch_gradients(algo, data, size, seed=2)
        measure(name, g1, g2, algo)
        if name == "batch-128-nodrop":
            algo.set_mask_update(**plus)
            measure(name + "+loo+rank", g1, g2, algo)
    for window in (100, 500):
        g1, algo = continued_gradients(_copy(path), data, window, seed=1)
        g2, _ = continued_gradients(_copy(path), data, window, seed=2)
        measure(f"accum-{window}", g1, g2, algo)
        algo.set_mask_update(**plus)
        measure(f"accum-{window}+loo+rank", g1, g2, algo)

    print()
    print(
        f"dataset {args.dataset}, {num_tasks} tasks, model after "
        f"{args.warmup_steps} steps (embed 64, 2 layers, batch 16), k = {K} per "
        f"task; chance Jaccard: drop {chance_jaccard(K, droppable):.4f}, grow "
        f"{chance_jaccard(K, inactive):.4f}"
    )
    print()
    print(
        "| estimator | drop-set Jaccard | grow-set Jaccard | Δ probe loss "
        "(this update) | Δ probe loss (random update, same size) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, jd, jg, dl, dr in rows:
        print(f"| `{name}` | {jd:.3f} | {jg:.3f} | {dl:+.5f} | {dr:+.5f} |")
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    with d3rlpy_warnings_only():  # d3rlpy's per-fit lines would bury the table
        main()
