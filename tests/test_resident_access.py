"""Resident accesses: no channel hop, and the documented yield rule -- each one is a
cancellation point, and a run of RESIDENT_YIELD of them in a row yields to the others,
so a process touching only resident memory cannot starve anyone."""

from __future__ import annotations

from typing import cast

import pytest
import trio

from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.kernel import Kernel
from capkern.mmu._vm import RESIDENT_YIELD, VM, VMConfig
from capkern.testing.ports import fake_crypt, fake_pager


def _vm_and_process() -> tuple[VM, Domain]:
    vm = VM(VMConfig(4), Counters(), lambda *a: None, fake_pager(), fake_crypt())
    dom = Domain(cast(Kernel, None), 1, "p", "process", 16)
    vm.attach(dom)
    return vm, dom


@pytest.mark.parametrize("op", ["read", "write"])
async def test_a_resident_loop_yields_every_resident_yield_accesses(op: str) -> None:
    vm, dom = _vm_and_process()
    base = vm.mmap(dom, PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    await vm.write(dom, base, b"x" * 8)  # resident now
    log: list[str] = []
    stop = False

    async def hog() -> None:
        for _ in range(10 * RESIDENT_YIELD):
            if op == "read":
                await vm.read(dom, base, 8)
            else:
                await vm.write(dom, base, b"y" * 8)
            log.append("h")

    async def other() -> None:
        while not stop:
            log.append("o")
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # let it start
        await hog()
        stop = True
    runs = "".join(log).split("o")
    # the hog runs at most RESIDENT_YIELD accesses per scheduler batch; trio may order
    # two batches hog-last then hog-first, so at most twice that between two "o"s
    assert max(len(r) for r in runs) <= 2 * RESIDENT_YIELD
    assert len(runs) >= 10  # and the other task ran throughout


async def test_a_cancelled_process_stops_at_its_next_resident_access() -> None:
    vm, dom = _vm_and_process()
    base = vm.mmap(dom, PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    await vm.write(dom, base, b"x")
    done = 0
    with trio.CancelScope() as scope:
        scope.cancel()
        await vm.read(dom, base, 1)
        done += 1
    assert done == 0 and scope.cancelled_caught


async def test_resident_accesses_report_reference_and_dirty_changes_once() -> None:
    vm, dom = _vm_and_process()
    base = vm.mmap(dom, 2 * PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    await vm.write(dom, base, b"a")
    await vm.write(dom, base + PAGE_SIZE, b"b")
    vm.res.harvest()  # the pager heard of both
    for _ in range(100):
        await vm.read(dom, base, 1)
        await vm.write(dom, base + PAGE_SIZE + 5, b"c")
    assert len(vm.res.touched) == 2 and len(vm.res.dirtied) == 0  # dirty since mapping
    mapped, referenced, dirty = vm.res.harvest()
    assert mapped == [] and sorted(referenced) == sorted(vm.res.resident) and dirty == []
    assert await vm.read(dom, base + PAGE_SIZE, 6) == b"b\0\0\0\0c"
