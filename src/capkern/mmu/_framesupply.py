"""Where a fault's frame comes from: the free list, the eviction under way, or a new
eviction (trusted).

One eviction runs at a time.  A fault that needs a frame while one is under way queues
for a frame it frees, or fails with it (:mod:`.framewait`) -- so when the pager hangs,
every fault waiting for memory fails after one eviction's deadlines, not one after the
other -- and an eviction wakes as many waiters as it freed frames.  Before an eviction
the pooled discards are flushed: the pager may need the swap slots of dead pages now.
Frames a fault holds between taking and mapping them are counted (``filling``): when
no page is resident but some are on their way in, a fault waits for one of those
rather than failing with :class:`~capkern.errors.OutOfMemory`.
"""

from __future__ import annotations

import trio
from trio.lowlevel import wait_task_rescheduled

from .._protocols import MAX_BATCH
from ..errors import OutOfMemory
from ._aspace import AddressSpace
from ._discards import DiscardPool
from ._evict import Evictor
from ._frames import FrameTable
from ._framewait import FrameWaiters
from ._pageio import PageIO
from ._residency import Residency

__all__ = ["FrameSupply"]


class FrameSupply:
    """Frames for faults, evicting batches of ``batch`` pages when RAM is full."""

    def __init__(self, frames: FrameTable, res: Residency, evictor: Evictor,
                 discards: DiscardPool, io: PageIO, batch: int) -> None:
        self.frames = frames
        self.res = res
        self.evictor = evictor
        self.discards = discards
        self.io = io
        self.batch = min(batch, MAX_BATCH)
        self.waiters = FrameWaiters(frames)
        self.evicting = False  # one eviction at a time
        self.filling = 0  # frames held by faults in flight (taken, not yet mapped)
        # times a fault blocked here (each wait yields: a fault that waited for its frame
        # has yielded already, as one that called a server has -- the fault path checks)
        self.waits = 0
        # set (and dropped) when such a frame settles; made only when a fault waits on it
        self._filled: trio.Event | None = None

    def settled(self) -> None:
        """One frame counted in ``filling`` was mapped or given back."""
        self.filling -= 1
        filled = self._filled
        if filled is not None:
            self._filled = None
            filled.set()

    def free(self, frame: int) -> None:
        """Give a frame back (scrubbed), to a waiting fault if there is one: handed to it,
        not woken to look for one."""
        self.frames.free(frame)
        if self.waiters:
            self.waiters.give_free()

    async def get(self, faulter: AddressSpace | None = None) -> int:
        """A free frame, evicting a batch if RAM is full.  ``faulter`` is whose fault an
        eviction serves (precise mode tells the pager its space tag)."""
        while True:
            frame = self.frames.alloc()
            if frame is not None:
                return frame
            if self.evicting:
                self.waits += 1
                got: int | None = await wait_task_rescheduled(self.waiters.join())  # .wait()
                if got is not None:
                    return got
                continue
            if not self.res:
                if not self.filling:
                    raise self.out_of_memory()
                if self._filled is None:
                    self._filled = trio.Event()
                self.waits += 1
                await self._filled.wait()  # every frame is on its way to a page
                continue
            self.evicting = True
            self.discards.flush()
            try:
                victims, freed = await self.evictor.evict(self.batch, faulter)
            except BaseException:
                self.evicting = False
                self.waiters.hand_out()  # the next in line evicts instead
                raise
            self.evicting = False
            if victims and not freed and not self.frames.free_count:
                error = self.out_of_memory()  # the pager would not take the pages
                self.waiters.fail_all(error)
                raise error
            frame = self.frames.alloc()
            self.waiters.hand_out()
            if frame is not None:
                return frame
            # the victims went away meanwhile (their process exited): try again

    def out_of_memory(self) -> OutOfMemory:
        why = f": the evicted pages could not be stored ({self.io.store_error})" \
            if self.io.store_error else ""
        return OutOfMemory(f"no frame could be freed{why}")
