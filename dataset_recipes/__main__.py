"""``python -m dataset_recipes``: the same as the ``harmodt-recipes`` command."""

import sys

from .cli import main

sys.exit(main())
