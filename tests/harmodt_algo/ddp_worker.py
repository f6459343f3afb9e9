"""One rank of the 2-process data-parallel test (``test_distributed.py``).

Launched by ``torchrun --standalone --nproc-per-node 2``: trains a tiny HarmoDT
with ``enable_ddp=True`` on the gloo backend and saves what the test compares
(weights, masks, the sequences this rank trained on) to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import harmodt_algo  # noqa: F401  (before d3rlpy)

# isort: split
import d3rlpy
import torch
from d3rlpy.logging import NoopAdapterFactory

from harmodt_algo import PRESETS, HarmoDT, HarmoDTConfig
from tests.harmodt_algo.ddp_setup import CONFIG, STEPS, dataset  # PYTHONPATH=root


def main(out: Path, estimator: str) -> None:
    torch.set_num_threads(1)
    rank = d3rlpy.distributed.init_process_group("gloo")
    if estimator in ("pcgrad", "cagrad"):  # a surgery preset, mixed batches
        options = {**CONFIG, **PRESETS[estimator]}
    else:
        options = {**CONFIG, "harmony_estimator": estimator}
    algo = HarmoDT(HarmoDTConfig(**options), enable_ddp=True)
    seen: list[float] = []
    update = algo.update

    def recording_update(batch: Any, task_ids: Any = None) -> dict[str, float]:
        seen.append(float(batch.observations.sum()))
        return update(batch, task_ids)

    algo.update = recording_update  # type: ignore[method-assign]
    algo.fit(
        dataset(),
        n_steps=STEPS,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )
    assert algo.impl is not None
    if rank == 0:
        algo.save(str(out / "model.d3"))
    torch.save(
        {
            "weights": {k: v.clone() for k, v in algo.impl._net.state_dict().items()},
            "masks": algo.impl.flat_masks().clone(),
            "changed": algo.impl._modules.masks.changed.clone(),
            "seen": seen,
            "world": torch.distributed.get_world_size(),
        },
        out / f"rank{rank}.pt",
    )
    d3rlpy.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
