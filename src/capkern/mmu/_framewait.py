"""Faults waiting for a frame while an eviction runs (trusted).

One eviction runs at a time.  A fault that needs a frame meanwhile queues here, in FIFO
order, and the eviction's end hands out what it freed: as many waiters are woken as there
are frames (each wakes holding its frame), plus -- if waiters are left and no frame is
free -- one woken to start the next eviction.  So the cost of an eviction does not grow
with the number of processes waiting.  When an eviction could free nothing (the pager
would not take the pages), every waiter fails with it at once.
"""

from __future__ import annotations

from collections import deque

import trio

from ..errors import CapkernError
from ._frames import FrameTable

__all__ = ["FrameWaiters"]


class _Waiter:
    __slots__ = ("error", "event", "frame", "retry")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.frame = -1
        self.retry = False
        self.error: CapkernError | None = None


class FrameWaiters:
    """The queue of faults waiting for the eviction under way to free a frame."""

    def __init__(self, frames: FrameTable) -> None:
        self.frames = frames
        self._queue: deque[_Waiter] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    async def wait(self) -> int | None:
        """Wait for the eviction under way: a frame handed to us, or None (try again:
        we may be the one to start the next eviction).  Raises the eviction's error."""
        me = _Waiter()
        self._queue.append(me)
        try:
            await me.event.wait()
        except BaseException:
            if me.frame >= 0:  # handed a frame as we were cancelled: give it back
                self.frames.free(me.frame)
                self.wake_one()
            elif not me.event.is_set():
                self._queue.remove(me)
            elif me.retry:  # we were to start the next eviction: pass that on
                self.wake_one()
            raise
        if me.error is not None:
            raise me.error
        return me.frame if me.frame >= 0 else None

    def hand_out(self) -> None:
        """An eviction ended: give free frames to waiters, one each, in FIFO order; if
        waiters are left with no frame free, wake one to start the next eviction."""
        while self._queue and self.frames.free_count:
            me = self._queue.popleft()
            frame = self.frames.alloc()
            assert frame is not None
            me.frame = frame
            me.event.set()
        self.wake_one()

    def wake_one(self) -> None:
        """Wake the first waiter to try again (it will start an eviction if needed)."""
        if self._queue:
            me = self._queue.popleft()
            me.retry = True
            me.event.set()

    def fail_all(self, error: CapkernError) -> None:
        """The eviction freed nothing: every waiter fails with it."""
        while self._queue:
            me = self._queue.popleft()
            me.error = error
            me.event.set()
