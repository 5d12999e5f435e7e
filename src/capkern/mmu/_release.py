"""Releasing unmapped pages in bounded steps (trusted).

An exit or a munmap releases every page-table entry it touched: frees their frames and
hands their handles to the discard pool.  A process may have touched hundreds of
thousands of pages; doing all of that in one call would hold every other domain up for
a large fraction of a second.  So :class:`Releaser` does up to :data:`RELEASE_STEP`
entries at once and queues the rest to the kernel's task, which does a step and then
lets the scheduler run.  Each entry is settled whole (no checkpoint inside one), so an
eviction that runs meanwhile sees either a live page or a released one, never half.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

__all__ = ["RELEASE_STEP", "Releaser"]

RELEASE_STEP = 4096  # page-table entries released per step of a large exit or munmap

T = TypeVar("T")


class Releaser(Generic[T]):
    """Calls ``release_now`` on at most :data:`RELEASE_STEP` entries per step."""

    def __init__(self, release_now: Callable[[list[T]], None],
                 step: int = RELEASE_STEP) -> None:
        self._release_now = release_now
        self.step = step
        self.steps = 0  # steps done later, in the kernel's task
        self.left = 0  # entries queued for later steps, not yet released
        self._send, self._queue = trio.open_memory_channel[list[T]](math.inf)

    def release(self, entries: list[T]) -> None:
        """One step now; the rest, if any, in the kernel's task (:meth:`run`)."""
        if len(entries) > self.step:
            self.left += len(entries) - self.step
            self._send.send_nowait(entries[self.step:])
            del entries[self.step:]
        self._release_now(entries)

    @property
    def pending(self) -> bool:
        """Whether entries are still waiting for a later step."""
        return self.left > 0

    async def run(self) -> None:
        """The kernel's side: a step, then a scheduler pass (entries are dropped a step
        at a time too, so freeing their memory is spread out as well)."""
        async for entries in self._queue:
            while entries:
                chunk = entries[-self.step:]
                del entries[-self.step:]
                self._release_now(chunk)
                self.left -= len(chunk)
                self.steps += 1
                await trio.sleep(0)
