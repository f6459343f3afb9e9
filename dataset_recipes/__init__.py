"""Deterministic recipes that turn Meta-World (v3) into Minari datasets."""

__version__ = "0.1.0"
