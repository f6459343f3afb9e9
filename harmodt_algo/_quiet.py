"""Quiet terminals: no old-``gym`` notice, no d3rlpy chatter.

d3rlpy 2.8 always imports the old ``gym`` 0.26 package, whose ``gym_notices``
dependency prints a notice to stderr at import time. Marking ``gym_notices`` as
absent in ``sys.modules`` makes gym skip the notice; nothing else uses it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def silence_gym_notice() -> None:
    """Must run before the first ``import d3rlpy`` (or ``import gym``)."""
    sys.modules.setdefault("gym_notices", None)  # type: ignore[arg-type]


silence_gym_notice()


@contextmanager
def d3rlpy_warnings_only(stream: TextIO | None = None) -> Iterator[None]:
    """Only d3rlpy's warnings and errors while the block runs, on ``stream``
    (default: where structlog prints now), previous configuration restored.

    d3rlpy logs through structlog, one INFO line per epoch and per saved file
    and DEBUG lines such as "Fitting observation scaler..."; our commands
    print their own summaries, and stdout may hold JSON. The one helper every
    command and script uses.
    """
    import logging

    import structlog

    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=(
            previous["logger_factory"]
            if stream is None
            else structlog.PrintLoggerFactory(stream)
        ),
    )
    try:
        yield
    finally:
        structlog.configure(**previous)
