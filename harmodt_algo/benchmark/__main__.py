"""``python -m harmodt_algo.benchmark``."""

import sys

from .cli import main

sys.exit(main())
