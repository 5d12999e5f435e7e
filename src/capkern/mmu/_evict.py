"""Eviction: the pager chooses victims, the sealer seals them, the pager stores them
(trusted).

The victims are unmapped and *busy* while their sealed copies travel: a process touching
one faults and waits for the store to end.  A frame is freed only once the pager
confirmed the store; a page the pager did not take is mapped again, so a failed store
loses no data.  A policy's bad choice (unknown, repeated or no handles) costs speed
only: the kernel keeps the valid victims and falls back to FIFO if none is left.  A page
never written since its zero-fill is not sealed: it goes back to demand-zero.

What the pager hears with each request (:meth:`Evictor.report`): pages mapped since it
last heard, in mapping order (FIFO needs it), and the referenced and dirty pages as sets,
shuffled (with the boot's rng, so a seeded run repeats).  In precise mode the references
are the reference log instead (every reference, in order, see :mod:`.reflog`), with
each mapped page's space tag and the tag of the space the eviction is for.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from .._states import PageState, move
from .._trace import PageTrace
from ..errors import Fault, ServerError
from ._aspace import PTE, AddressSpace
from ._busy import Busy
from ._discards import shuffled
from ._frames import FrameTable
from ._pageio import PageIO, Victim
from ._ports import PagerLink
from ._reflog import ReferenceLog
from ._residency import MAX_REPORT, Residency

if TYPE_CHECKING:
    from .._trace import Counters

__all__ = ["Evictor"]


class Evictor:
    """Evicts batches of resident pages; shares the fault path's busy-page table."""

    def __init__(self, res: Residency, frames: FrameTable, busy: dict[PTE, Busy],
                 pager: PagerLink, io: PageIO, stats: Counters, *, rng: random.Random,
                 reflog: ReferenceLog | None, trace: PageTrace) -> None:
        self.res = res
        self.frames = frames
        self.busy = busy
        self.pager = pager
        self.io = io
        self.stats = stats
        self.rng = rng
        self.reflog = reflog
        self.trace = trace

    def report(self) -> dict[str, Any]:
        """What the pager hears with its next request (see the module docstring)."""
        mapped, referenced, dirty = self.res.harvest()
        body: dict[str, Any] = {"mapped": mapped, "dirty": shuffled(dirty, self.rng)}
        log = self.reflog
        if log is None:
            body["referenced"] = shuffled(referenced, self.rng)
        else:
            handles = self.res.handles
            body["spaces"] = [log.tag(handles[h].aspace) for h in mapped]
            refs, future = log.take()
            body["referenced"] = refs[-MAX_REPORT:]
            if future is not None:
                body["next_use"] = future[-MAX_REPORT:]
        return body

    async def observe(self) -> None:
        """Precise mode: report a full reference log before it outgrows one message."""
        body = self.report()
        try:
            await self.pager.call("observe", body)
        except BaseException as exc:
            self.res.unheard(body["mapped"])
            if not isinstance(exc, Fault | ServerError):
                raise
            self.io.event("pager_error", f"observe: {exc}")

    async def choose_victims(self, n: int, faulter: AddressSpace | None = None) -> list[int]:
        """Ask the pager for ``n`` victims (for a fault of ``faulter``); valid ones only."""
        res = self.res
        body = self.report()
        body["n"] = n
        if self.reflog is not None and faulter is not None and faulter.alive:
            body["for"] = self.reflog.tag(faulter)
        chosen: list[int] = []
        try:
            chosen = (await self.pager.call("evict", body))["victims"]
        except BaseException as exc:
            res.unheard(body["mapped"])
            if not isinstance(exc, Fault | ServerError):
                raise
            self.io.event("pager_error", f"evict: {exc}")
        resident = res.resident  # (a dict: no Python-level ``in`` per handle)
        victims = [h for h in dict.fromkeys(chosen) if h in resident][:n]
        if not victims:  # a policy's bad choice costs speed only: fall back to FIFO
            victims = res.oldest(n)
        return victims

    async def evict(self, n: int, faulter: AddressSpace | None = None) -> tuple[int, int]:
        """Evict up to ``n`` pages; return how many were chosen and how many frames that
        freed (fewer when the pager did not store some: those stay resident)."""
        victims = await self.choose_victims(n, faulter)
        pages: list[Victim] = []
        busy = Busy()
        handles, unmap, busy_table = self.res.handles, self.res.resident.pop, self.busy
        for h in victims:  # unmap first: a touch now faults and waits for us
            pte = handles[h]
            pte.present = False
            unmap(h, None)  # Residency.unmap, inlined (no call per page)
            busy_table[pte] = busy
            pages.append((h, pte.aspace, pte.vpn, pte))
        # a page never written since its zero-fill goes back to demand-zero, unsealed:
        # its next touch reads zeros without asking the pager for anything
        to_seal = [v for v in pages if v[3].dirty]
        sealing = {v[0] for v in to_seal}
        stored: set[int] = set()
        try:
            if to_seal:
                stored = await self.io.seal_and_store(to_seal)
        finally:
            freed = self.settle(pages, sealing, stored)
            busy.set()
        self.stats.clean_drops += len(pages) - len(to_seal)
        return len(pages), freed

    def settle(self, pages: list[Victim], sealing: set[int], stored: set[int]) -> int:
        """After the store: free each victim's frame, or map the page again if its sealed
        copy did not make it (handles being sealed: ``sealing``); returns frames freed."""
        freed = evicted = 0
        busy, free, trace = self.busy, self.frames.free, self.trace
        for h, aspace, vpn, pte in pages:
            del busy[pte]
            if not aspace.alive or aspace.pages.get(vpn) is not pte:
                free(pte.frame)  # unmapped meanwhile: the frame is ours to free
                pte.frame = -1
            elif h not in sealing or h in stored:
                free(pte.frame)
                pte.frame = -1
                gone = PageState.SWAPPED if pte.sealed_version is not None else PageState.ZERO
                # RESIDENT -> SWAPPED/ZERO is always allowed: move() checks any other
                pte.state = gone if pte.state is PageState.RESIDENT else move(pte.state, gone)
                evicted += 1
                if trace.enabled:
                    trace.page("eviction", aspace.asid, vpn, h, None,
                               "" if h in sealing else "clean")
            else:  # keep the data resident: no data is lost
                self.stats.store_failures += 1
                pte.present = True
                self.res.map(h, pte)
                continue
            freed += 1
        self.stats.evictions += evicted
        return freed
