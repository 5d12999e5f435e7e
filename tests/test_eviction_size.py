"""How many pages an eviction takes: the configured batch, or -- when more faults already
wait for frames -- one for each of them and one for the evicting fault (at most
MAX_BATCH), so under load one eviction serves every waiter and its fixed cost (the
pager's policy round, the seal and store trips) is shared by that many faults."""

from __future__ import annotations

from typing import Any, cast

import trio

from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._protocols import MAX_BATCH
from capkern._trace import Counters
from capkern.kernel import Kernel
from capkern.mmu._vm import VM, VMConfig
from capkern.testing.ports import fake_crypt, fake_pager, memory_pager

RW = Rights.READ | Rights.WRITE


def _gated_vm(ram: int, batch: int, gate: trio.Event) -> tuple[VM, Any]:
    """A VM whose pager holds every store until ``gate`` is set."""
    handlers = memory_pager()
    honest_store = handlers["store"]

    async def slow_store(body: Any) -> Any:
        await gate.wait()
        return await honest_store(body)

    handlers["store"] = slow_store
    pager = fake_pager(handlers)
    return VM(VMConfig(ram, evict_batch=batch), Counters(), lambda *a: None, pager,
              fake_crypt()), pager


def _process(vm: VM, pid: int, pages: int) -> tuple[Domain, int]:
    dom = Domain(cast(Kernel, None), pid, f"p{pid}", "process", 64)
    vm.attach(dom)
    return dom, vm.mmap(dom, pages * PAGE_SIZE, RW, None)


async def test_an_eviction_takes_one_page_for_each_fault_waiting() -> None:
    gate = trio.Event()
    vm, pager = _gated_vm(4, 1, gate)
    a, base_a = _process(vm, 1, 5)
    for p in range(4):
        await vm.write(a, base_a + p * PAGE_SIZE, b"a")  # RAM full
    others = [_process(vm, pid, 1) for pid in (2, 3, 4)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(vm.write, a, base_a + 4 * PAGE_SIZE, b"a")  # evicts 1, held
        await trio.testing.wait_all_tasks_blocked()
        for dom, base in others:
            nursery.start_soon(vm.write, dom, base, b"o")
        await trio.testing.wait_all_tasks_blocked()
        assert len(vm.supply.waiters) == 3
        gate.set()
    asked = [body["n"] for label, body in pager.calls if label == "evict"]
    # the first eviction: the batch; its one frame went to its own fault, so the first
    # waiter evicts next, for itself and the two still waiting
    assert asked == [1, 3]
    for dom, base in others:
        assert await vm.read(dom, base, 1) == b"o"
    assert len(vm.supply.waiters) == 0


async def test_an_eviction_never_takes_more_than_max_batch() -> None:
    vm, _pager = _gated_vm(4, 2, trio.Event())
    assert vm.supply.wanted() == 2  # nobody waits: the configured batch
    vm.supply.waiters._queue.extend([object()] * (MAX_BATCH + 10))  # type: ignore[list-item]
    assert vm.supply.wanted() == MAX_BATCH
    vm.supply.waiters._queue.clear()
