"""Reading model files without running code from them.

Why: d3rlpy's ``.d3`` file is a pickle (``d3rlpy.base.dump_learnable``), and
``pickle.load`` runs whatever the file asks for: a crafted ``.d3`` executes its
payload before anything can say "not a model file". Its legitimate content is
only data (a dict of the torch checkpoint as bytes, the config as JSON text,
the version string), so a data-only unpickler reads every real ``.d3`` and
refuses any file that names a Python object to build. The torch checkpoint
inside (and every ``save_model`` checkpoint) is read with
``torch.load(weights_only=True)``, which allows tensors and containers only.

Weights are loaded into the *unwrapped* modules, so a model built with
``enable_ddp=True`` (under torchrun) reads files saved by any world size.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch
from d3rlpy.base import LearnableConfigWithShape
from d3rlpy.torch_utility import map_location, unwrap_ddp_model

__all__ = ["UnsafeModelFile", "load_learnable_file", "load_weights"]


class UnsafeModelFile(pickle.UnpicklingError):
    """The file asks to build a Python object: it is not a plain model file."""


class _DataOnly(pickle.Unpickler):
    """Builds dicts, lists, strings, bytes and numbers only: ``find_class``
    (every import a pickle can ask for) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafeModelFile(
            f"it asks to import {module}.{name}, which a d3rlpy model file never "
            "does: refused without running it"
        )


def _read_d3(file: BinaryIO) -> dict[str, Any]:
    obj = _DataOnly(file).load()
    if not (
        isinstance(obj, dict)
        and isinstance(obj.get("torch"), bytes)
        and isinstance(obj.get("config"), str)
    ):
        raise ValueError("not a d3rlpy model file (no 'torch' bytes and 'config')")
    return obj


def load_weights(algo: Any, source: str | Path | bytes) -> None:
    """Load a ``save_model`` checkpoint (a path, or its bytes) into the built
    ``algo``: tensors only (``weights_only=True``), into unwrapped modules."""
    assert algo.impl is not None, "build the model before loading weights"
    data = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    where = map_location(algo.impl.device)
    state = torch.load(data, map_location=where, weights_only=True)
    modules = algo.impl.modules.create_checkpointer(algo.impl.device).modules
    for name, module in modules.items():
        if isinstance(module, torch.nn.Module):
            module = unwrap_ddp_model(module)
        module.load_state_dict(state[name])


def load_learnable_file(path: str | Path, device: Any = None) -> Any:
    """``d3rlpy.load_learnable`` without code execution: the algorithm a
    ``.d3`` file holds, or :class:`UnsafeModelFile` / ``ValueError``."""
    with open(path, "rb") as fh:
        obj = _read_d3(fh)
    config = LearnableConfigWithShape.deserialize(obj["config"])
    algo = config.create(device)
    load_weights(algo, obj["torch"])
    return algo
