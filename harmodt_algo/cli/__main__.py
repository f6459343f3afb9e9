"""``python -m harmodt_algo.cli`` (what ``torchrun -m`` needs): the ``harmodt``
command."""

import sys

from . import main

sys.exit(main())
