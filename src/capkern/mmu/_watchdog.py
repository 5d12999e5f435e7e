"""The kernel's watchdog: deadlines of the kernel's calls to its servers (trusted).

Every call the fault path makes has a deadline, so a server that never answers only
denies service.  A trio cancel scope per call would do it, but entering one registers a
deadline with the run loop and leaving it removes it again: about a fifth of a major
fault.  The watchdog keeps them instead: a call is *armed* (appended to the queue of its
timeout: deadlines of one timeout arrive in order, so each queue stays sorted) and
*disarmed* when it returns; one task sleeps until the earliest armed deadline and fails
each call still waiting then, through IPC's own abort path (:meth:`ipc.Timed`), with the
error the port chose.  The run loop hears of a new deadline only when it is earlier than
the one the watchdog sleeps until -- the first call after a quiet spell, or a call with
a shorter timeout.

A call that ends is disarmed in place and leaves its queue only once it reaches the
front; so behind one call a server holds, every call that ends meanwhile would wait in
the queue until the held one's deadline -- kernel memory the server chooses (calls per
deadline).  Each queue counts its armed timers and drops its ended ones in one pass when
they outnumber the armed ones: a queue is never longer than about twice its armed calls
(amortised O(1) per call).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import trio

from .._ipc import Waiting

__all__ = ["CallTimer", "Watchdog"]


class CallTimer:
    """One armed call: its deadline, what it waits on (set by ``ipc.send``) and how to
    fail it (``error()`` builds the exception when the deadline passes)."""

    __slots__ = ("armed", "deadline", "error", "waiting")

    def __init__(self, deadline: float, error: Callable[[], Exception]) -> None:
        self.deadline = deadline
        self.error = error
        self.waiting: Waiting | None = None
        self.armed = True


#: calls failed per step of the watchdog: a thousand deadlines passing at once must not
#: hold the kernel for more than a few milliseconds (the rest go after a checkpoint)
EXPIRE_STEP = 128

#: a queue shorter than this is never compacted (a pass over a few timers is not worth it)
COMPACT_MIN = 64


class _Queue(deque[CallTimer]):
    """The timers of one timeout, in deadline order; ``live``: how many are armed."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        super().__init__()
        self.live = 0


class Watchdog:
    """Deadlines for calls, kept in one queue per timeout and enforced by :meth:`run`."""

    def __init__(self) -> None:
        self._queues: dict[float, _Queue] = {}
        self._scope: trio.CancelScope | None = None  # the watchdog's sleep
        self._wake_at = math.inf
        self.expired = 0  # calls failed at their deadline
        # the run's clock, read directly while :meth:`run` runs (trio.current_time()
        # reaches it through two more Python calls, at every call the kernel makes)
        self._now: Callable[[], float] = trio.current_time
        # a disarmed timer no queue holds any more, armed again by the next call: one
        # object less per call.  A caller must not touch a timer it disarmed.
        self._spare: CallTimer | None = None

    def arm(self, timeout: float, error: Callable[[], Exception]) -> CallTimer:
        """A timer for a call starting now that must end within ``timeout`` seconds."""
        deadline = self._now() + timeout
        timer = self._spare
        if timer is None:
            timer = CallTimer(deadline, error)
        else:
            self._spare = None
            timer.deadline = deadline
            timer.error = error
            timer.armed = True
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = _Queue()
        queue.append(timer)
        queue.live += 1
        if deadline < self._wake_at:  # rare: the watchdog sleeps past it
            self._wake_at = deadline
            if self._scope is not None:
                self._scope.deadline = deadline
        return timer

    def disarm(self, timer: CallTimer, timeout: float) -> None:
        """The call ended (answered, failed or cancelled): forget its deadline.  The
        timer is the watchdog's again (it may arm it for the next call)."""
        queue = self._queues[timeout]
        timer.waiting = None
        if timer.armed:  # (not if the watchdog failed it already)
            timer.armed = False
            queue.live -= 1
            if queue[0] is timer:  # it ended first of its queue (the common case)
                queue.popleft()
                self._spare = timer  # no queue holds it now: the next call's
        while queue and not queue[0].armed:
            queue.popleft()
        if len(queue) > 2 * queue.live + COMPACT_MIN:  # ended calls behind a held one
            armed = [t for t in queue if t.armed]
            queue.clear()
            queue.extend(armed)

    def expire(self, now: float, budget: int = EXPIRE_STEP) -> float:
        """Fail armed calls whose deadline is not after ``now``, at most ``budget`` of
        them; return the next armed deadline (inf if none; ``now`` if overdue calls are
        left for the next step).  No I/O: :meth:`run` calls it, and tests can."""
        earliest = math.inf
        for queue in self._queues.values():
            while queue and (not queue[0].armed or queue[0].deadline <= now):
                if budget <= 0:
                    return now  # the rest in a later step: the kernel is not held
                timer = queue.popleft()
                if not timer.armed:
                    continue
                budget -= 1
                timer.armed = False
                queue.live -= 1
                waiting = timer.waiting
                if waiting is not None and waiting.time_out(timer.error()):
                    self.expired += 1
            if queue:
                earliest = min(earliest, queue[0].deadline)
        return earliest

    async def run(self) -> None:
        """Enforce deadlines until cancelled (a kernel task, in the kernel's nursery)."""
        self._now = trio.lowlevel.current_clock().current_time
        try:
            while True:
                self._wake_at = self.expire(self._now())
                with trio.CancelScope(deadline=self._wake_at) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
        finally:
            self._now = trio.current_time
