"""Run every capkern benchmark and print value, baseline and ratio (one command).

    python benchmarks/run.py [--json]
"""

from __future__ import annotations

import sys

from capkern._cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
