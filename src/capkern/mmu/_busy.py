"""A page's busy mark: set when the fault or eviction working on the page ends
(trusted).

Every fault and every eviction marks its pages busy, but a mark is rarely waited on:
only by a second task faulting on the same page, or by a discard of a page released
while it was busy.  A ``trio.Event`` per mark cost about half a percent of a major
fault's instructions (its set and its ``set()`` walk), so the mark makes its event only
when something needs one.
"""

from __future__ import annotations

import trio

__all__ = ["Busy"]


class Busy:
    """Set once, by whoever marked the page; waited on through :meth:`event`, made on
    first need (and already set if the mark was)."""

    __slots__ = ("_event", "done")

    def __init__(self) -> None:
        self._event: trio.Event | None = None
        self.done = False

    def set(self) -> None:
        self.done = True
        if self._event is not None:
            self._event.set()

    def event(self) -> trio.Event:
        """A ``trio.Event`` set when this mark is (for a discard to wait on)."""
        if self._event is None:
            self._event = trio.Event()
            if self.done:
                self._event.set()
        return self._event

    async def wait(self) -> None:
        """Until the mark is set (a checkpoint, like ``trio.Event.wait``)."""
        await self.event().wait()
