"""Pager-set benchmarks: the cost of surviving a malicious pager.

* ``fault_mirror``: the sealed major-fault sweep (``capkern.bench.fault_sweep``)
  with a mirror of 3 default pagers (``copies=3``: every page stored three times, each
  fetch asking one, hedged) vs the same sweep with a single pager (us per major fault;
  goal <= 1.5x).
* ``fault_erasure``: the same with an erasure-coded set of 5 pagers, any 3 of which
  rebuild a page (n=5, m=3) vs a single pager (goal <= 2x).

Each prints the storage overhead of its mode: ``overhead_code`` (bytes that carry
information per byte of sealed page: k for a mirror, n/m plus tags for erasure) and
``overhead_disk`` (what today's pager spends: one sealed-page slot per copy or shard).
Runs are interleaved, so a change in machine load hits both alike; the best counts.
"""

from __future__ import annotations

from typing import Any

import trio

from .pagefmt import SEALED_LEN
from .pagerset import overhead_erasure, overhead_mirror

__all__ = ["bench_fault_erasure", "bench_fault_mirror"]

Result = dict[str, Any]


def _default_pager() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.pager.server").pager_server


def _compare(set_options: dict[str, Any], pages: int, ram: int, rounds: int,
             repeats: int) -> tuple[float, float, int]:
    from .bench import fault_sweep

    in_set, single = [], []
    for _ in range(repeats):
        in_set.append(trio.run(lambda: fault_sweep("aes-256-gcm", pages, ram, rounds,
                                                    **set_options)))
        single.append(trio.run(fault_sweep, "aes-256-gcm", pages, ram, rounds))
    (t_set, faults), (t_one, faults_one) = min(in_set), min(single)
    return (t_set / max(1, faults) * 1e6, t_one / max(1, faults_one) * 1e6, faults)


def bench_fault_mirror(pages: int = 256, ram: int = 32, rounds: int = 3, copies: int = 3,
                       repeats: int = 3) -> Result:
    """Microseconds per major fault with a mirror of ``copies`` pagers vs one pager."""
    options = {"pagers": tuple(_default_pager() for _ in range(copies)),
               "pager_set": "mirror", "copies": copies}
    value, baseline, faults = _compare(options, pages, ram, rounds, repeats)
    return {"value": value, "baseline": baseline, "ratio": value / baseline, "unit": "us",
            "major_faults": faults, "copies": copies,
            "overhead_code": overhead_mirror(copies), "overhead_disk": float(copies)}


def bench_fault_erasure(pages: int = 256, ram: int = 32, rounds: int = 3, shards: int = 5,
                        needed: int = 3, repeats: int = 3) -> Result:
    """Microseconds per major fault with an n=``shards``, m=``needed`` erasure-coded set
    vs one pager."""
    options = {"pagers": tuple(_default_pager() for _ in range(shards)),
               "pager_set": "erasure", "needed": needed}
    value, baseline, faults = _compare(options, pages, ram, rounds, repeats)
    return {"value": value, "baseline": baseline, "ratio": value / baseline, "unit": "us",
            "major_faults": faults, "shards": shards, "needed": needed,
            "overhead_code": overhead_erasure(shards, needed, SEALED_LEN),
            "overhead_disk": float(shards)}
