"""The watchdog reads the clock of the run it is in: directly while its task runs (one
Python call per armed call instead of three), through ``trio.current_time()`` otherwise
-- never a clock left over from an earlier run."""

from __future__ import annotations

import trio
import trio.testing

from capkern.errors import PagerUnavailable
from capkern.mmu._watchdog import Watchdog


def _late() -> Exception:
    return PagerUnavailable("late")


def test_the_watchdog_arms_by_the_clock_of_its_own_run() -> None:
    watchdog = Watchdog()

    async def first() -> None:
        await trio.sleep(5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog.run)
            await trio.testing.wait_all_tasks_blocked()
            timer = watchdog.arm(1.0, _late)
            assert timer.deadline == trio.current_time() + 1.0 == 6.0
            watchdog.disarm(timer, 1.0)
            nursery.cancel_scope.cancel()

    async def second() -> None:
        await trio.sleep(500)
        timer = watchdog.arm(2.0, _late)  # before the watchdog's task runs in this run
        assert timer.deadline == trio.current_time() + 2.0 == 502.0
        watchdog.disarm(timer, 2.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog.run)
            await trio.sleep(1)
            timer = watchdog.arm(2.0, _late)  # while it runs: read directly, same clock
            assert timer.deadline == trio.current_time() + 2.0 == 503.0
            watchdog.disarm(timer, 2.0)
            nursery.cancel_scope.cancel()

    trio.run(first, clock=trio.testing.MockClock(autojump_threshold=0))
    trio.run(second, clock=trio.testing.MockClock(autojump_threshold=0))
