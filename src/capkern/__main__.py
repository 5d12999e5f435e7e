"""``python -m capkern ...``: the same command line as the ``capkern`` console script."""

import sys

from ._cli import main

sys.exit(main())
