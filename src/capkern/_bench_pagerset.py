"""Pager-set benchmarks: the cost of surviving a malicious pager.

* ``fault_mirror``: the sealed major-fault sweep (as ``major_fault``'s)
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

import os
import time
from typing import Any

import trio

from ._pagefmt import PAGE_SIZE, SEALED_LEN
from ._proc import Process
from ._root import boot
from .pagerset import overhead_erasure, overhead_mirror

__all__ = ["bench_fault_erasure", "bench_fault_mirror", "fault_sweep"]

Result = dict[str, Any]


def _default_pager() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.pager").pager_server


async def fault_sweep(pages: int, ram: int, rounds: int, **options: Any
                      ) -> tuple[float, int]:
    """(seconds, major faults) of ``rounds`` timed write sweeps over ``pages`` pages
    through ``ram`` frames, sealed with AES-256-GCM unless ``options`` (which go to
    ``boot``) name another cipher.  The one sweep every fault benchmark times."""
    done: list[float] = []

    async def sweeper(proc: Process) -> None:
        base = proc.mmap(pages * PAGE_SIZE)
        data = os.urandom(64)
        for p in range(pages):  # populate (demand-zero faults, not timed)
            await proc.write(base + p * PAGE_SIZE, data)
        t0 = time.perf_counter()
        for _ in range(rounds):
            for p in range(pages):
                await proc.write(base + p * PAGE_SIZE, data)
        done.append(time.perf_counter() - t0)

    options.setdefault("cipher", "aes-256-gcm")
    async with boot(ram_pages=ram, evict_batch=16, **options) as k:
        pid = k.spawn(sweeper, name="sweeper")
        before = k.stats.page_ins
        status = await k.wait(pid)
        assert status.ok, status
        faults = k.stats.page_ins - before
    return done[0], faults


def _compare(set_options: dict[str, Any], pages: int, ram: int, rounds: int,
             repeats: int) -> tuple[float, float, int]:
    in_set, single = [], []
    for _ in range(repeats):
        in_set.append(trio.run(lambda: fault_sweep(pages, ram, rounds, **set_options)))
        single.append(trio.run(fault_sweep, pages, ram, rounds))
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
