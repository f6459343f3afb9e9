"""Exceptions shared by every recipe module.

Why a separate module: validation happens in several places (suites, qualities,
the builder) and the CLI must catch exactly one type to turn bad input into a
one-line message with exit code 2, without importing the heavy modules first.
"""

from __future__ import annotations


class RecipeError(ValueError):
    """Bad input to a recipe: the message names the problem and the valid choices.

    Raised before any environment is stepped, so a failing call costs nothing.
    """


class BuildInterrupted(RuntimeError):
    """A build stopped before its dataset was written (Ctrl-C, SIGTERM, test hook).

    Completed chunks stay in the staging folder; re-running the same build
    resumes from them. Nothing is visible under the dataset id.
    """

    def __init__(self, message: str, *, staged_chunks: int, total_chunks: int) -> None:
        super().__init__(message)
        self.staged_chunks = staged_chunks
        self.total_chunks = total_chunks
