"""A page's busy mark makes its ``trio.Event`` only when something waits on it, and that
event is set exactly when the mark is, whichever comes first."""

from __future__ import annotations

import trio
import trio.testing

from capkern.mmu._busy import Busy


def test_a_mark_nobody_waits_on_makes_no_event() -> None:
    busy = Busy()
    busy.set()
    assert busy.done and busy._event is None


def test_an_event_asked_for_after_the_mark_is_set_is_set() -> None:
    busy = Busy()
    busy.set()
    assert busy.event().is_set()


async def test_waiters_and_event_holders_wake_when_the_mark_is_set() -> None:
    busy = Busy()
    event = busy.event()  # e.g. a discard of a page released while it was busy
    assert not event.is_set()
    woke: list[str] = []

    async def waiter() -> None:
        await busy.wait()
        woke.append("waiter")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        busy.set()
    assert woke == ["waiter"] and event.is_set() and busy.event() is event
    with trio.testing.assert_checkpoints():
        await busy.wait()  # set already: still a checkpoint, as trio.Event.wait is
