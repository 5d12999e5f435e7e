"""A fault runs on the faulting task, so a killed process cancels its own fault: every
step must undo itself -- frames go back, victims whose store was cut off stay mapped
with their data, and faults that were waiting for that eviction carry on."""

from __future__ import annotations

from typing import Any, cast

import trio

from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.kernel import Kernel
from capkern.mmu._vm import VM, VMConfig
from capkern.testing.ports import fake_crypt, fake_pager, memory_pager


def _setup(handlers: dict[str, Any], ram: int = 4) -> tuple[VM, list[Domain]]:
    vm = VM(VMConfig(ram, 2, 10.0, 10.0), Counters(), lambda *a: None,
            fake_pager(handlers), fake_crypt())
    doms = []
    for pid in (1, 2):
        dom = Domain(cast(Kernel, None), pid, f"p{pid}", "process", 16)
        vm.attach(dom)
        doms.append(dom)
    return vm, doms


def _accounted(vm: VM, doms: list[Domain]) -> int:
    resident = sum(p.present for d in doms for p in d.aspace.pages.values())  # type: ignore[union-attr]
    return vm.frames.free_count + resident


async def test_killing_the_evicting_process_hands_the_eviction_on(
        autojump_clock: trio.abc.Clock) -> None:
    handlers = memory_pager()
    honest_store = handlers["store"]
    slow = {"on": True}

    async def slow_store(body: Any) -> Any:
        if slow["on"]:
            slow["on"] = False
            await trio.sleep(5)
        return await honest_store(body)

    handlers["store"] = slow_store
    vm, (a, b) = _setup(handlers)
    rw = Rights.READ | Rights.WRITE
    base_a = vm.mmap(a, 4 * PAGE_SIZE, rw, None)
    for p in range(4):
        await vm.write(a, base_a + p * PAGE_SIZE, bytes([p + 1]) * 8)  # RAM full
    base_b = vm.mmap(b, 2 * PAGE_SIZE, rw, None)
    done: list[str] = []

    async def evicting_a(scope: trio.CancelScope) -> None:
        with scope:
            extra = vm.mmap(a, PAGE_SIZE, rw, None)
            await vm.write(a, extra, b"a")  # evicts; its store hangs for 5 s
        done.append("a-cancelled" if scope.cancelled_caught else "a")

    async def waiting_b() -> None:
        await vm.write(b, base_b, b"b")  # queues behind a's eviction
        done.append("b")

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(evicting_a, scope)
        await trio.sleep(1)
        nursery.start_soon(waiting_b)
        await trio.sleep(1)
        scope.cancel()  # kill a mid-store
    assert done == ["a-cancelled", "b"]
    assert await vm.read(b, base_b, 1) == b"b"
    for p in range(4):  # a's pages: still resident or properly swapped, never lost
        assert await vm.read(a, base_a + p * PAGE_SIZE, 8) == bytes([p + 1]) * 8
    assert _accounted(vm, [a, b]) == 4
    assert not vm._busy


async def test_killing_a_page_in_frees_its_frame(autojump_clock: trio.abc.Clock) -> None:
    handlers = memory_pager()
    honest_fetch = handlers["fetch"]

    async def slow_fetch(body: Any) -> Any:
        await trio.sleep(5)
        return await honest_fetch(body)

    vm, (a, b) = _setup(handlers)
    rw = Rights.READ | Rights.WRITE
    base = vm.mmap(a, 6 * PAGE_SIZE, rw, None)
    for p in range(6):
        await vm.write(a, base + p * PAGE_SIZE, bytes([p + 1]) * 8)  # page 0 swapped
    handlers["fetch"] = slow_fetch
    with trio.move_on_after(1) as scope:
        await vm.read(a, base, 8)
    assert scope.cancelled_caught
    assert _accounted(vm, [a, b]) == 4 and not vm._busy
    handlers["fetch"] = honest_fetch
    assert await vm.read(a, base, 8) == b"\x01" * 8  # paged in on the next try
