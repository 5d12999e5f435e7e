"""Eviction: the pager chooses victims, the sealer seals them, the pager stores them
(trusted).

The victims are unmapped and *busy* while their sealed copies travel: a process touching
one faults and waits for the store to end.  A frame is freed only once the pager
confirmed the store; a page the pager did not take is mapped again, so a failed store
loses no data.  A policy's bad choice (unknown, repeated or no handles) costs speed
only: the kernel keeps the valid victims and falls back to FIFO if none is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..errors import Fault, ServerError
from .aspace import PTE
from .frames import FrameTable
from .pageio import PageIO, Victim
from .ports import PagerLink
from .residency import Residency

if TYPE_CHECKING:
    from ..trace import Counters

__all__ = ["Evictor"]


class Evictor:
    """Evicts batches of resident pages; shares the fault path's busy-page table."""

    def __init__(self, res: Residency, frames: FrameTable, busy: dict[PTE, trio.Event],
                 pager: PagerLink, io: PageIO, stats: Counters) -> None:
        self.res = res
        self.frames = frames
        self.busy = busy
        self.pager = pager
        self.io = io
        self.stats = stats

    async def choose_victims(self, n: int) -> list[int]:
        res = self.res
        mapped, referenced, dirty = res.harvest()
        body = {"n": n, "mapped": mapped, "referenced": referenced, "dirty": dirty}
        chosen: list[int] = []
        try:
            chosen = (await self.pager.call("evict", body))["victims"]
        except BaseException as exc:
            res.unheard(mapped)
            if not isinstance(exc, Fault | ServerError):
                raise
            self.io.event("pager_error", f"evict: {exc}")
        victims = list(dict.fromkeys(h for h in chosen if h in res))[:n]
        if not victims:  # a policy's bad choice costs speed only: fall back to FIFO
            victims = res.oldest(n)
        return victims

    async def evict(self, n: int) -> tuple[int, int]:
        """Evict up to ``n`` pages; return how many were chosen and how many frames that
        freed (fewer when the pager did not store some: those stay resident)."""
        victims = await self.choose_victims(n)
        pages: list[Victim] = []
        busy = trio.Event()
        for h in victims:  # unmap first: a touch now faults and waits for us
            aspace, vpn = self.res.handles[h]
            pte = aspace.pages[vpn]
            pte.present = False
            self.res.unmap(h)
            self.busy[pte] = busy
            pages.append((h, aspace, vpn, pte))
        to_seal = [v for v in pages if v[3].dirty or v[3].sealed_version is None]
        stored: set[int] = set()
        freed = 0
        try:
            if to_seal:
                stored = await self.io.seal_and_store(to_seal)
        finally:
            for victim in pages:
                freed += self.settle(victim, victim in to_seal, stored)
            busy.set()
        self.stats.clean_drops += len(pages) - len(to_seal)
        return len(pages), freed

    def settle(self, victim: Victim, sealed: bool, stored: set[int]) -> bool:
        """After the store: free the frame (True), or map the page again if its sealed
        copy did not make it (False)."""
        h, aspace, vpn, pte = victim
        del self.busy[pte]
        if not aspace.alive or aspace.pages.get(vpn) is not pte:
            self.frames.free(pte.frame)  # unmapped meanwhile: the frame is ours to free
            pte.frame = -1
        elif not sealed or h in stored:
            self.frames.free(pte.frame)
            pte.frame = -1
            pte.state = "swapped"
            self.stats.evictions += 1
        else:  # keep the data resident: no data is lost
            self.stats.store_failures += 1
            pte.present = True
            self.res.map(h, pte)
            return False
        return True
