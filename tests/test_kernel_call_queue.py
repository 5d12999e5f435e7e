"""The kernel's calls to its servers wait their turn on a full endpoint: an endpoint holds
at most ``Limits.max_queued_senders`` blocked senders, which bounds what a domain holding
a send capability can pile up, but the kernel's own calls (each the fault of a process
task, bounded by its deadline) must not fail while the pager is healthy just because many
processes fault at once.  (A program's own sends stay bounded: tests/test_ipc.py,
``test_queue_full_when_too_many_senders_block``.)"""

from __future__ import annotations

import os

import pytest

import capkern
from capkern import Process
from capkern._pagefmt import PAGE_SIZE


async def _sweep(proc: Process, pages: int, rounds: int) -> None:
    base = proc.mmap(pages * PAGE_SIZE)
    data = [os.urandom(64) for _ in range(pages)]
    for _ in range(rounds):
        for i in range(pages):
            await proc.write(base + i * PAGE_SIZE, data[i])
        for i in range(pages):
            assert await proc.read(base + i * PAGE_SIZE, 64) == data[i]


@pytest.mark.parametrize("limit", [1, 2, 8])
async def test_many_faults_at_once_overflow_no_endpoint(limit: int) -> None:
    procs = 24
    async with capkern.boot(ram_pages=16, evict_batch=4,
                            limits=capkern.Limits(max_queued_senders=limit)) as kernel:
        pids = [kernel.spawn(_sweep, 6, 2, name=f"w{i}") for i in range(procs)]
        for pid in pids:
            status = await kernel.wait(pid)
            assert status.ok, status
        assert kernel.stats.page_in_errors == 0
        assert kernel.stats.pager_timeouts == 0
        assert kernel.stats.page_ins > procs  # the workload did page in through the pager

