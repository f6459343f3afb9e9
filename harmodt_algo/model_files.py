"""Model files that cannot run code, and reading d3rlpy's that way.

Two formats. ``.safetensors`` (:func:`save_safe_model`): the weights, masks
and prompts as tensors, the config (with the task list) as JSON metadata: a
format made for sharing, with no code in it. ``.d3`` (d3rlpy's, what
``HarmoDT.save`` writes and ``d3rlpy.load_learnable`` reads) read as below.

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

__all__ = [
    "SAFE_SUFFIX",
    "UnsafeModelFile",
    "load_learnable_file",
    "load_weights",
    "safe_sibling",
    "save_safe_model",
]

#: The suffix of the tensors-and-JSON model format.
SAFE_SUFFIX = ".safetensors"
_FORMAT = "harmodt-model/1"
#: The modules a safe model file holds: everything but the optimizer state
#: (a model file is for acting, evaluating and adapting; checkpoints resume).
_SAFE_MODULES = ("transformer", "masks", "prompts")


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


def _modules(algo: Any) -> dict[str, torch.nn.Module]:
    """The safe-file modules of a built model, unwrapped from DDP."""
    found = algo.impl.modules.create_checkpointer(algo.impl.device).modules
    return {name: unwrap_ddp_model(found[name]) for name in _SAFE_MODULES}


def safe_sibling(path: str | Path) -> Path:
    """``model.d3`` -> ``model.safetensors`` (where commands write the safe copy)."""
    return Path(path).with_suffix(SAFE_SUFFIX)


def save_safe_model(algo: Any, path: str | Path) -> Path:
    """Write ``algo`` (built) as a ``.safetensors`` model file, atomically."""
    from safetensors.torch import save_file

    assert algo.impl is not None, "build the model before saving it"
    tensors = {
        f"{module}.{key}": value.detach().cpu().contiguous()
        for module, net in _modules(algo).items()
        for key, value in net.state_dict().items()
    }
    config = LearnableConfigWithShape(
        observation_shape=algo.impl.observation_shape,
        action_size=algo.impl.action_size,
        config=algo.config,
    )
    metadata = {"format": _FORMAT, "config": config.serialize()}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _load_safe(path: Path, device: Any) -> Any:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        if metadata.get("format") != _FORMAT:
            raise ValueError(
                f"not a harmodt model file (format {metadata.get('format')!r})"
            )
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    config = LearnableConfigWithShape.deserialize(metadata["config"])
    algo = config.create(device)
    for module, net in _modules(algo).items():
        prefix = f"{module}."
        state = {
            k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
        }
        net.load_state_dict(state)
    return algo


def load_learnable_file(path: str | Path, device: Any = None) -> Any:
    """The algorithm a model file holds, without running code from it: a
    ``.safetensors`` file, or a ``.d3`` read with the data-only unpickler
    (:class:`UnsafeModelFile` if it asks for more)."""
    file = Path(path)
    if file.suffix == SAFE_SUFFIX:
        return _load_safe(file, device)
    with open(file, "rb") as fh:
        obj = _read_d3(fh)
    config = LearnableConfigWithShape.deserialize(obj["config"])
    algo = config.create(device)
    load_weights(algo, obj["torch"])
    return algo
