"""A fault waiting for a frame is handed its frame: woken holding it, in FIFO order, with
no re-check of the free list -- and a frame handed to a waiter always reaches it, even
if the waiter is cancelled before it runs (it cannot be lost between the two).  The wait
is the fault's yield: it does not yield a second time once it has its frame."""

from __future__ import annotations

from typing import Any, cast

import trio

from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.kernel import Kernel
from capkern.mmu._frames import FrameTable
from capkern.mmu._framewait import FrameWaiters
from capkern.mmu._vm import VM, VMConfig
from capkern.testing.ports import fake_crypt, fake_pager, memory_pager


def _full(n: int) -> FrameTable:
    frames = FrameTable(n)
    while frames.alloc() is not None:
        pass
    return frames


async def test_free_frames_go_to_waiters_in_arrival_order() -> None:
    frames = _full(4)
    waiters = FrameWaiters(frames)
    got: list[tuple[int, int | None]] = []
    async with trio.open_nursery() as nursery:
        for i in range(3):
            async def one(i: int = i) -> None:
                got.append((i, await waiters.wait()))

            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()  # arrives in order 0, 1, 2
        frames.free(2)
        frames.free(0)
        waiters.give_free()  # no retry wake-up: the third still waits
        await trio.testing.wait_all_tasks_blocked()
        assert len(waiters) == 1 and frames.free_count == 0
        assert sorted(got) == [(0, 0), (1, 2)]  # the free list's order, to the first in line
        frames.free(3)
        waiters.give_free()
    assert got[2] == (2, 3)


async def test_a_waiter_handed_a_frame_then_cancelled_still_gets_it() -> None:
    frames = _full(2)
    waiters = FrameWaiters(frames)
    got: list[int | None] = []
    scope = trio.CancelScope()

    async def waiter() -> None:
        with scope:
            got.append(await waiters.wait())
            await trio.lowlevel.checkpoint()  # the cancellation lands here, after it

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        frames.free(1)
        waiters.give_free()
        scope.cancel()  # before the waiter runs again
    assert got == [1] and scope.cancelled_caught
    assert frames.free_count == 0 and len(waiters) == 0


async def test_give_free_with_no_waiter_leaves_frames_free() -> None:
    frames = _full(2)
    waiters = FrameWaiters(frames)
    frames.free(0)
    waiters.give_free()
    waiters.wake_one()
    assert frames.free_count == 1 and len(waiters) == 0


class _Steps(trio.abc.Instrument):
    """Counts the scheduler steps of each task."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


async def test_a_fault_that_waited_for_its_frame_yields_no_second_time() -> None:
    """Waiting for the frame was the fault's yield: woken with it, a zero-fill fault
    returns at once (before, it yielded again, as a fault that had waited for nothing)."""
    gate = trio.Event()
    handlers = memory_pager()
    honest_store = handlers["store"]

    async def slow_store(body: Any) -> Any:  # the eviction's last call to the pager
        await gate.wait()
        return await honest_store(body)

    handlers["store"] = slow_store
    vm = VM(VMConfig(4, evict_batch=2), Counters(), lambda *a: None, fake_pager(handlers),
            fake_crypt())
    a = Domain(cast(Kernel, None), 1, "a", "process", 16)
    b = Domain(cast(Kernel, None), 2, "b", "process", 16)
    vm.attach(a)
    vm.attach(b)
    rw = Rights.READ | Rights.WRITE
    base_a = vm.mmap(a, 5 * PAGE_SIZE, rw, None)
    base_b = vm.mmap(b, PAGE_SIZE, rw, None)
    for p in range(4):
        await vm.write(a, base_a + p * PAGE_SIZE, b"a")  # RAM full
    counter = _Steps()
    waited: list[trio.lowlevel.Task] = []

    async def fault_b() -> None:
        waited.append(trio.lowlevel.current_task())
        await vm.write(b, base_b, b"b")  # no frame: waits for a's eviction

    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(vm.write, a, base_a + 4 * PAGE_SIZE, b"a")  # evicts, slowly
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(fault_b)
            await trio.testing.wait_all_tasks_blocked()
            assert len(vm.supply.waiters) == 1
            gate.set()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert await vm.read(b, base_b, 1) == b"b"
    assert counter.steps[waited[0]] == 2  # its start, and its wake-up holding the frame
