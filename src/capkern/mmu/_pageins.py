"""Page-ins of a burst of faults share their trips to the pager and the sealer (trusted).

When many processes fault at once, each page-in would make its own round trips: a
``fetch`` to the pager (and the pager's read of the block device) and an ``unseal`` to
the sealer.  Faults come in bursts then: an eviction hands its freed frames to as many
waiting faults at once, and they all run in the same scheduler pass.  The first of them
to need a page-in leads a batch: it yields once, the rest of its burst joins, and the
batch goes in one ``fetch_many`` and one ``unseal`` (up to :data:`MAX_BATCH` pages).  A
fault that did not wait for a frame -- a lone process, the common case -- goes alone,
as before, and pays nothing more.  Linux's block-layer plugging is the anchor:
requests issued together are merged before they reach the device.

A batch carries bytes only.  Each fault keeps its own frame, busy mark, counts and
errors, and maps its own page:

* a page the sealer refuses is that fault's :class:`~capkern.errors.IntegrityFault`
  alone (the binding is checked page by page, so a pager that swaps pages within a batch
  gains nothing);
* a page the pager has no copy of (``fetch_many`` answers b"") is fetched again alone by
  its own fault, so its error is exactly the one a lone fetch gives (``not_found``,
  ``lost``, ...);
* if the batch's trip fails (a pager or sealer error, a deadline) every member fetches
  alone; if its leader is cancelled, the others do, and the leader's cancellation goes
  on.  A member cancelled while it waits leaves the batch, or its page is dropped from
  the batch's answer.

Batches of different bursts are independent: a pager that holds one trip holds only the
faults whose pages are in it, and each waits on at most two trips in turn (its batch,
then its own), each bounded by its deadline.
"""

from __future__ import annotations

from typing import Any

from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .._message import Delivered
from .._protocols import MAX_BATCH
from .._serverloop import UNSUPPORTED
from ..errors import ServerError
from ._aspace import PTE, AddressSpace
from ._pageio import MISSING, PageIO

__all__ = ["PageIns"]

_QUEUED, _SENT, _GONE = 0, 1, 2
#: what a member is woken with when its page must be fetched alone
_ALONE = object()


class _Member:
    """A fault waiting to page in with a batch."""

    __slots__ = ("aspace", "batch", "pte", "state", "task", "vpn")

    def __init__(self, batch: list[_Member], aspace: AddressSpace, vpn: int, pte: PTE) -> None:
        self.batch = batch
        self.aspace = aspace
        self.vpn = vpn
        self.pte = pte
        self.task: Task = current_task()
        self.state = _QUEUED

    def cancelled(self, _: Any) -> Abort:
        """Its fault was cancelled while it waited (``wait_task_rescheduled``'s abort)."""
        if self.state == _QUEUED:
            self.batch.remove(self)
        self.state = _GONE
        return Abort.SUCCEEDED

    def wake(self, value: object) -> None:
        if self.state != _GONE:
            self.state = _GONE
            reschedule(self.task, Delivered(value))


class PageIns:
    """Single-page page-ins, merged into one batch when a burst of faults comes at once."""

    def __init__(self, io: PageIO) -> None:
        self.io = io
        self.open: list[_Member] | None = None  # the batch a leader gathers this tick
        self.off = False  # the pager answers no fetch_many (written before it): alone
        self.batches = 0  # batch trips made (for tests and curious researchers)
        self.batched = 0  # pages they carried

    async def fetch(self, aspace: AddressSpace, vpn: int, pte: PTE, gather: bool
                    ) -> list[bytes | None]:
        """:meth:`PageIO.fetch` of one page, merged with the page-ins of the other faults
        of its burst: it joins the batch being gathered, or leads one if ``gather`` (its
        fault was woken with others: it waited for a frame), or else goes alone.  (The
        fault path calls :meth:`PageIO.fetch` itself when it would go alone.)"""
        batch = self.open
        if batch is not None and len(batch) < MAX_BATCH - 1:
            me = _Member(batch, aspace, vpn, pte)
            batch.append(me)
            got = await wait_task_rescheduled(me.cancelled)
            return await self.io.fetch(aspace, vpn, pte) if got is _ALONE else [got]
        if gather and not self.off:
            return await self._lead(aspace, vpn, pte)
        return await self.io.fetch(aspace, vpn, pte)

    async def _lead(self, aspace: AddressSpace, vpn: int, pte: PTE) -> list[bytes | None]:
        """Let the rest of this tick's burst join, then fetch and unseal the batch in one
        trip each; wake every member with its page (or to fetch alone)."""
        batch: list[_Member] = []
        self.open = batch
        try:
            await cancel_shielded_checkpoint()  # the tasks woken with us run meanwhile
        finally:
            if self.open is batch:  # (a full batch may have been followed by another)
                self.open = None
        if self.off:  # another batch learned meanwhile that this pager has no fetch_many
            for m in batch:
                m.wake(_ALONE)
            batch = []
        if not batch:  # nobody came: a lone fetch
            return await self.io.fetch(aspace, vpn, pte)
        for m in batch:
            m.state = _SENT
        self.batches += 1
        self.batched += len(batch) + 1
        try:
            plains = await self.io.fetch_each(
                [(aspace, vpn, pte)] + [(m.aspace, m.vpn, m.pte) for m in batch])
        except BaseException as exc:  # each fetches alone, for its own exact error
            for m in batch:
                m.wake(_ALONE)
            if not isinstance(exc, Exception):
                raise  # cancelled: so is our own page-in
            if isinstance(exc, ServerError) and exc.reason == UNSUPPORTED:
                self.off = True  # and every page-in from now on
            return await self.io.fetch(aspace, vpn, pte)
        for m, plain in zip(batch, plains[1:], strict=True):
            m.wake(_ALONE if plain is MISSING else plain)
        if plains[0] is MISSING:
            return await self.io.fetch(aspace, vpn, pte)
        return [plains[0]]  # type: ignore[list-item]
