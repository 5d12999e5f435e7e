"""A fault waiting for a frame is handed its frame: woken holding it, in FIFO order, with
no re-check of the free list -- and a frame handed to a waiter always reaches it, even
if the waiter is cancelled before it runs (it cannot be lost between the two)."""

from __future__ import annotations

import trio

from capkern.mmu._frames import FrameTable
from capkern.mmu._framewait import FrameWaiters


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
