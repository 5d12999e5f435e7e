"""Faults waiting for a frame: an eviction wakes as many waiters as it freed frames
(plus one to evict next), a cancelled waiter gives its frame back, and an eviction that
freed nothing fails every waiter at once."""

from __future__ import annotations

import trio

from capkern.errors import OutOfMemory
from capkern.mmu._frames import FrameTable
from capkern.mmu._framewait import FrameWaiters


async def _waiters(n: int, waiters: FrameWaiters, out: list[int | str | None],
                   nursery: trio.Nursery) -> None:
    async def one() -> None:
        try:
            out.append(await waiters.wait())
        except OutOfMemory:
            out.append("oom")

    for _ in range(n):
        nursery.start_soon(one)
    await trio.testing.wait_all_tasks_blocked()


async def test_freed_frames_wake_exactly_that_many_waiters() -> None:
    frames = FrameTable(8)
    while frames.alloc() is not None:
        pass
    waiters = FrameWaiters(frames)
    out: list[int | str | None] = []
    async with trio.open_nursery() as nursery:
        await _waiters(64, waiters, out, nursery)
        frames.free(3)
        frames.free(5)
        waiters.hand_out()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(x for x in out if isinstance(x, int)) == [3, 5]
        assert out.count(None) == 1  # one goes on to evict
        assert len(waiters) == 61
        waiters.fail_all(OutOfMemory("nothing freed"))
    assert out.count("oom") == 61


async def test_cancelled_waiter_leaves_the_queue() -> None:
    frames = FrameTable(2)
    frames.alloc()
    frames.alloc()
    waiters = FrameWaiters(frames)
    out: list[int | str | None] = []
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def cancelled() -> None:
            with scope:
                await waiters.wait()

        nursery.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        await _waiters(1, waiters, out, nursery)
        scope.cancel()  # the first leaves the queue...
        await trio.testing.wait_all_tasks_blocked()
        assert len(waiters) == 1
        frames.free(1)
        waiters.hand_out()  # ...so the frame goes to the second
    assert out == [1]
    assert frames.free_count == 0


def test_fail_all_with_no_waiters_is_harmless() -> None:
    waiters = FrameWaiters(FrameTable(1))
    waiters.fail_all(OutOfMemory("x"))
    waiters.wake_one()
    assert len(waiters) == 0
