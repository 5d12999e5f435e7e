"""The watchdog reuses a disarmed timer only once no queue holds it: a call that ended
first of its queue hands its timer to the next call; one that ended behind a held call
(still queued) or that the watchdog failed is never handed out again."""

from __future__ import annotations

import math

import trio

from capkern.errors import PagerUnavailable
from capkern.mmu._watchdog import Watchdog


class Waits:
    def __init__(self) -> None:
        self.failed = 0

    def time_out(self, exc: Exception) -> bool:
        self.failed += 1
        return True


def _late() -> Exception:
    return PagerUnavailable("late")


def _queued(watchdog: Watchdog) -> list[object]:
    return [t for q in watchdog._queues.values() for t in q]


async def test_a_timer_is_reused_only_when_no_queue_holds_it() -> None:
    watchdog = Watchdog()
    first = watchdog.arm(1.0, _late)
    watchdog.disarm(first, 1.0)  # ended first of its queue: free again
    assert _queued(watchdog) == []
    again = watchdog.arm(1.0, _late)
    assert again is first and again.armed and again.waiting is None

    later = watchdog.arm(1.0, _late)  # behind ``again``, which is held
    watchdog.disarm(later, 1.0)
    assert later in _queued(watchdog)  # still queued: not handed out
    fresh = watchdog.arm(1.0, _late)
    assert fresh is not later and fresh is not again
    watchdog.disarm(again, 1.0)  # the queue drains behind it; ``later`` left it
    watchdog.disarm(fresh, 1.0)
    assert _queued(watchdog) == []


async def test_a_timer_the_watchdog_failed_is_not_reused() -> None:
    watchdog = Watchdog()
    timer = watchdog.arm(1.0, _late)
    timer.waiting = waits = Waits()
    assert watchdog.expire(trio.current_time() + 1.0) == math.inf
    assert waits.failed == 1 and not timer.armed
    watchdog.disarm(timer, 1.0)  # the call wakes with the error, then disarms
    other = watchdog.arm(1.0, _late)
    assert other is not timer and other.armed
    watchdog.disarm(other, 1.0)
