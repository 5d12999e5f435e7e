"""Faults waiting for a frame while an eviction runs (trusted).

One eviction runs at a time.  A fault that needs a frame meanwhile queues here, in FIFO
order, and the eviction's end hands out what it freed: as many waiters are woken as there
are frames (each wakes holding its frame), plus -- if waiters are left and no frame is
free -- one woken to start the next eviction.  So the cost of an eviction does not grow
with the number of processes waiting.  When an eviction could free nothing (the pager
would not take the pages), every waiter fails with it at once.

A waiter is its task, parked with ``trio.lowlevel.wait_task_rescheduled`` and woken with
what it waited for -- its frame, None (try again) or the error -- not a ``trio.Event``
each (an Event is several objects: its parking lot, the lot's dict, the wake-up's
``outcome.Value``; at scale most faults wait here once).  A waiter cancelled while
queued leaves the queue in its abort callback; once woken it is no longer cancellable
there, so a frame handed to it always reaches the fault, which gives it back if it fails.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from .._message import Delivered
from ..errors import CapkernError
from ._frames import FrameTable

__all__ = ["FrameWaiters"]


class _Waiter:
    """One fault's task in the queue (its abort callback takes it out again)."""

    __slots__ = ("queue", "task")

    def __init__(self, queue: deque[_Waiter], task: Task) -> None:
        self.queue = queue
        self.task = task

    def cancelled(self, _: Any) -> Abort:
        """Cancelled while queued (``wait_task_rescheduled``'s abort callback)."""
        self.queue.remove(self)
        return Abort.SUCCEEDED


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
        return await wait_task_rescheduled(self.join())  # type: ignore[no-any-return]

    def join(self) -> Callable[[Any], Abort]:
        """Queue the current task; the abort callback to block with
        (``await wait_task_rescheduled(waiters.join())`` is :meth:`wait` without a
        coroutine frame of its own: the fault path waits so)."""
        me = _Waiter(self._queue, current_task())
        self._queue.append(me)
        return me.cancelled

    def hand_out(self) -> None:
        """An eviction ended: give free frames to waiters, one each, in FIFO order; if
        waiters are left with no frame free, wake one to start the next eviction."""
        self.give_free()
        self.wake_one()

    def give_free(self) -> None:
        """Give the free frames to waiters, one each, in FIFO order (a frame freed while
        an eviction runs goes straight to the first waiter, which needs no retry)."""
        queue = self._queue
        frames = self.frames
        while queue and frames.free_count:
            reschedule(queue.popleft().task, Delivered(frames.alloc()))

    def wake_one(self) -> None:
        """Wake the first waiter to try again (it will start an eviction if needed)."""
        if self._queue:
            reschedule(self._queue.popleft().task, Delivered(None))

    def fail_all(self, error: CapkernError) -> None:
        """The eviction freed nothing: every waiter fails with it."""
        while self._queue:
            reschedule(self._queue.popleft().task, outcome.Error(error))
