"""HarmoDT: Harmony Multi-Task Decision Transformer as a d3rlpy algorithm.

``import harmodt_algo`` registers ``HarmoDTConfig`` with d3rlpy (so
``d3rlpy.load_learnable`` restores HarmoDT models) and the mask-aware
optimizer factories with d3rlpy's optimizer registry.
"""

from . import _quiet  # noqa: F401  (must precede the d3rlpy import)
from .data import DatasetError, MultiTaskDataset, as_multitask_dataset
from .harmodt import PRESETS, HarmoDT, HarmoDTConfig, HarmoDTTaskView
from .optimizer import MaskedAdamWFactory, MaskedOptimizerWrapper

__all__ = [
    "PRESETS",
    "DatasetError",
    "HarmoDT",
    "HarmoDTConfig",
    "HarmoDTTaskView",
    "MaskedAdamWFactory",
    "MaskedOptimizerWrapper",
    "MultiTaskDataset",
    "as_multitask_dataset",
]

__version__ = "0.1.0"
