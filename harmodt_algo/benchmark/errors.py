"""The harness's one error type, in its own module so that every other module
of the package can raise it without importing anything else."""

from __future__ import annotations

__all__ = ["BenchmarkError"]


class BenchmarkError(ValueError):
    """Bad input to the harness (unknown method, missing dataset, mismatched
    budget of an existing cell, ...); the message says what to do."""
