"""What the data-parallel test and its worker share: data, config, steps."""

from __future__ import annotations

from typing import Any

import numpy as np
from d3rlpy.dataset import Episode

from harmodt_algo import MultiTaskDataset

STEPS = 7  # mask updates at steps 3 and 6
#: per-rank batch; dropout off so that 2 ranks x 4 equal 1 process x 8
CONFIG: dict[str, Any] = dict(
    batch_size=4,
    mask_batch_size=4,
    embed_size=16,
    num_layers=1,
    num_heads=2,
    context_size=4,
    max_timestep=50,
    attn_dropout=0.0,
    resid_dropout=0.0,
    embed_dropout=0.0,
    mask_interval=3,
    change_count=6,
    change_schedule="constant",
)


def dataset() -> MultiTaskDataset:
    rng = np.random.default_rng(0)
    return MultiTaskDataset.from_episodes(
        {
            f"task-{t}": [
                Episode(
                    observations=rng.normal(size=(20, 39)).astype(np.float32),
                    actions=np.tanh(rng.normal(size=(20, 4))).astype(np.float32),
                    rewards=rng.random((20, 1)).astype(np.float32),
                    terminated=False,
                )
                for _ in range(2)
            ]
            for t in range(3)
        }
    )
