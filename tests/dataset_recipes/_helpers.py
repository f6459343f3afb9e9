"""Helpers for the recipe tests (array equality of whole datasets)."""

from __future__ import annotations

import numpy as np


def episode_arrays(dataset_id: str) -> list[dict[str, np.ndarray]]:
    """All arrays of every episode of a local dataset (for equality checks)."""
    import minari

    ds = minari.load_dataset(dataset_id)
    out = []
    for ep in ds.iterate_episodes():
        arrays = {
            "observations": ep.observations,
            "actions": ep.actions,
            "rewards": ep.rewards,
            "terminations": ep.terminations,
            "truncations": ep.truncations,
        }
        arrays.update({f"infos/{k}": v for k, v in ep.infos.items()})
        out.append(arrays)
    return out


def assert_same_episodes(a: str, b: str) -> None:
    ea, eb = episode_arrays(a), episode_arrays(b)
    assert len(ea) == len(eb) > 0
    for x, y in zip(ea, eb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
