"""``python -m pruning_core``: the command line (``pruning_core.cli``), also installed as ``pruning-explorer``."""

import sys

from .cli import main

sys.exit(main())
