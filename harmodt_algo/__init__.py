"""HarmoDT: Harmony Multi-Task Decision Transformer as a d3rlpy algorithm."""

from . import _quiet  # noqa: F401  (must precede the d3rlpy import)

__version__ = "0.1.0"
