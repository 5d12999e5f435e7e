"""A one-page read or write resolves its own fault (``Process.read``/``write`` hand back
the VM's coroutine, and the VM's access calls ``fault`` with no frame between): the page
is checked again after every fault, so a page unmapped meanwhile is a typed fault, for
the task that paged it in and for one that waited on it; bad arguments are refused when
the access is called."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

import capkern
from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.errors import ConfigError, SegmentationFault
from capkern.kernel import Kernel
from capkern.mmu._vm import VM, VMConfig
from capkern.testing.ports import fake_crypt, fake_pager, memory_pager


def _vm_with_gated_fetch() -> tuple[VM, Domain, trio.Event, trio.Event]:
    """A VM of 2 frames whose pager holds every fetch until ``release`` is set
    (``fetching`` is set when one is held)."""
    handlers = memory_pager()
    honest_fetch = handlers["fetch"]
    fetching, release = trio.Event(), trio.Event()

    async def held_fetch(body: Any) -> Any:
        fetching.set()
        await release.wait()
        return await honest_fetch(body)

    handlers["fetch"] = held_fetch
    vm = VM(VMConfig(2, 1, 60.0, 60.0), Counters(), lambda *_: None, fake_pager(handlers),
            fake_crypt())
    dom = Domain(cast(Kernel, None), 1, "p1", "process", 16)  # the VM needs no kernel
    vm.attach(dom)
    return vm, dom, fetching, release


@pytest.mark.parametrize("op", ["read", "write"])
async def test_a_page_unmapped_during_its_fault_is_a_segfault_for_both_faulters(
        op: str, capkern_clock: trio.testing.MockClock) -> None:
    vm, dom, fetching, release = _vm_with_gated_fetch()
    base = vm.mmap(dom, 4 * PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    for p in range(4):  # page 0 is evicted: sealed and stored with the pager
        await vm.write(dom, base + p * PAGE_SIZE, bytes([p + 1]) * 8)
    assert not dom.aspace.pages[base // PAGE_SIZE].present  # type: ignore[union-attr]
    outcomes: list[str] = []

    async def access() -> None:
        try:
            if op == "read":
                await vm.read(dom, base, 8)
            else:
                await vm.write(dom, base, b"new data")
            outcomes.append("done")
        except SegmentationFault:
            outcomes.append("SegmentationFault")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(access)  # pages it in (held at the pager)
        await fetching.wait()
        nursery.start_soon(access)  # waits for that page-in
        await trio.testing.wait_all_tasks_blocked()
        vm.munmap(dom, base, PAGE_SIZE)
        release.set()
    assert outcomes == ["SegmentationFault", "SegmentationFault"]
    assert await vm.read(dom, base + PAGE_SIZE, 8) == bytes([2]) * 8  # the rest is intact


async def test_read_and_write_hand_back_the_vms_coroutine_and_check_arguments_first(
        ) -> None:
    seen: list[str] = []

    async def prog(proc: capkern.Process) -> None:
        addr = proc.mmap(PAGE_SIZE)
        write = proc.write(addr, b"abc")
        seen.append(write.cr_code.co_qualname)  # type: ignore[attr-defined]
        await write
        read = proc.read(addr, 3)
        seen.append(read.cr_code.co_qualname)  # type: ignore[attr-defined]
        seen.append((await read).decode())
        for bad in (lambda: proc.read(addr, -1), lambda: proc.write(addr, "text")):  # type: ignore[arg-type]
            try:
                bad()  # refused at the call: nothing to await
            except ConfigError:
                seen.append("refused")

    async with capkern.boot(ram_pages=4) as kernel:
        assert (await kernel.wait(kernel.spawn(prog))).ok
    assert seen == ["VM.write", "VM.read", "abc", "refused", "refused"]
