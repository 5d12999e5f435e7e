"""Machine instructions per major fault, counted by callgrind: a cost that does not move
with the load of a shared machine (CPU time there moves by +-15%, more than most single
changes to the fault path save).

    python benchmarks/fault_instructions.py [SRC_DIR ...]

For each source tree (default: the installed capkern) it runs the sealed sweep of
``capkern bench major_fault_limit`` (256 pages through 32 frames) under ``valgrind
--tool=callgrind`` twice, with 1 and with 4 sweeps, and prints the difference divided by
the 768 faults in between: start-up and the first sweep cancel out.  Give two trees (e.g.
``git archive`` snapshots of two commits) to compare a change; about a minute per tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

PAGES = 256
SWEEP = """
import functools, sys, trio
from capkern._bench_paging import _sweep
trio.run(functools.partial(_sweep, {pages}, 1, 32, int(sys.argv[1])))
"""


def instructions(src: str | None, rounds: int) -> int:
    """Instructions callgrind counts for the whole run of ``rounds`` sweeps."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", SWEEP.format(pages=PAGES), str(rounds)],
        env=env, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{out[-2000:]}")
    return int(found.group(1))


def per_fault(src: str | None) -> float:
    """Instructions per major fault of the sweep (each sweep faults on every page)."""
    return (instructions(src, 4) - instructions(src, 1)) / (3 * PAGES)


def main(argv: list[str]) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts", file=sys.stderr)
        return 1
    trees: list[str | None] = [*argv] or [None]
    for src in trees:
        print(f"{src or 'installed capkern'}: {per_fault(src):,.0f} instructions per major fault")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
