"""A dataset's content fingerprint: does a resumed run train on the data it
started with?

Why: a Minari id names a dataset, not its content; a dataset rebuilt under the
same id with other episodes would silently change what a resumed run learns.
The fingerprint hashes what training reads: the task order and every
episode's observations, actions and rewards.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .data import MultiTaskDataset

__all__ = ["dataset_fingerprint"]


def dataset_fingerprint(data: MultiTaskDataset) -> str:
    """sha256 (first 16 hex digits) of the task names and every episode's
    arrays, in order."""
    digest = hashlib.sha256()
    for name, episodes in zip(data.task_names, data.episodes, strict=True):
        digest.update(name.encode() + b"\0")
        for episode in episodes:
            for array in (episode.observations, episode.actions, episode.rewards):
                arr = np.ascontiguousarray(array)
                digest.update(f"{arr.dtype}{arr.shape}".encode())
                digest.update(arr.tobytes())
    return digest.hexdigest()[:16]
