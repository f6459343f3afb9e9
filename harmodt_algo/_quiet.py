"""Import d3rlpy without the unmaintained-``gym`` notice reaching users.

d3rlpy 2.8 always imports the old ``gym`` 0.26 package, whose ``gym_notices``
dependency prints a notice to stderr at import time. Marking ``gym_notices`` as
absent in ``sys.modules`` makes gym skip the notice; nothing else uses it.
"""

from __future__ import annotations

import sys


def silence_gym_notice() -> None:
    """Must run before the first ``import d3rlpy`` (or ``import gym``)."""
    sys.modules.setdefault("gym_notices", None)  # type: ignore[arg-type]


silence_gym_notice()
