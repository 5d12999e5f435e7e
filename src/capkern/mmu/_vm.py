"""The fault path: demand-zero, sealed eviction and verified page-in (trusted).

Resident pages are read and written on the process's own task with no channel hop; a
non-present page is a fault, resolved on the faulting task itself (no task per fault)::

    fault -> [evict: pager chooses victims -> crypt seals -> pager stores]
          -> zero-fill, or pager fetch -> crypt unseal + binding/version check -> map

The VM holds no kernel: it gets a :class:`VMConfig`, the counters, an event callback and
a :class:`~capkern.mmu._ports.ServerPort` each for the pager and the sealer.  Its rules
(busy pages, one eviction at a time, discards after the last use, every step undone on
cancellation, one boot-wide version counter, when a resident access yields: every
:data:`RESIDENT_YIELD` accesses in a row) are set out in ``docs/design.md`` ("Paging");
the pieces live beside it: eviction (:mod:`.evict`), seal/store/page-in (:mod:`.pageio`),
frames for faults (:mod:`.framesupply`), reference reports (:mod:`.residency`,
:mod:`.reflog`), read-ahead (:mod:`.readahead`), discards (:mod:`.discards`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import checkpoint, checkpoint_if_cancelled

from .._cspace import Rights
from .._pagefmt import PAGE_SIZE
from .._states import PageState, move
from .._trace import PageTrace
from ..errors import (
    ConfigError,
    Fault,
    IntegrityFault,
    ProcessError,
    ProtectionFault,
    SegmentationFault,
)
from ._aspace import PTE, AddressSpace, Asids, check_span
from ._busy import Busy
from ._discards import DiscardPool, Taken
from ._evict import Evictor
from ._frames import FrameTable
from ._framesupply import FrameSupply
from ._pageins import PageIns
from ._pageio import Discard, PageIO
from ._ports import PagerLink, ServerPort, server_stats
from ._readahead import ReadAhead
from ._reflog import HandleSource, ReferenceLog
from ._release import Releaser
from ._residency import MAX_REPORT, Residency

if TYPE_CHECKING:
    from .._domain import Domain
    from .._trace import Counters

__all__ = ["RESIDENT_YIELD", "VM", "EventSink", "VMConfig"]

RESIDENT_YIELD = 64  # resident accesses in a row before one yields to the scheduler
_R = Rights.READ._value_
_W = Rights.WRITE._value_
_ZERO, _SWAPPED, _RESIDENT = PageState.ZERO, PageState.SWAPPED, PageState.RESIDENT

EventSink = Callable[[str, "Domain | None", str], None]
"""``event(kind, domain or None for the kernel itself, detail)``."""


@dataclass(frozen=True)
class VMConfig:
    """What the fault path needs of the boot options."""

    ram_pages: int
    evict_batch: int = 8
    pager_deadline: float = 2.0
    crypt_deadline: float = 5.0
    readahead: int = 0  # pages fetched after a sequential fault's own, in the same trip
    seed: int | None = None  # page handles and report order derived from it (reproducible)
    precise: bool = False  # every reference, in order, reported to the pager
    boot_id: bytes = b""  # what the sealer binds every page of this boot to (introspection)


class VM:
    """Paging state of one booted kernel."""

    def __init__(self, config: VMConfig, stats: Counters, event: EventSink,
                 pager: ServerPort, crypt: ServerPort, page_trace: PageTrace | None = None
                 ) -> None:
        self.config = config
        self.boot_id = config.boot_id
        self.stats = stats
        self.event = event
        self.trace = PageTrace() if page_trace is None else page_trace  # off unless given
        self.handles = HandleSource(config.seed)  # its rng orders reports and discards
        # precise mode: every reference, in order, for the pager (see _reflog.py)
        self.reflog = ReferenceLog(MAX_REPORT, self.handles) if config.precise else None
        self.frames = FrameTable(config.ram_pages)
        self.pager = PagerLink(pager, config.pager_deadline, stats)
        self.crypt = crypt
        self.res = Residency()
        self.asids = Asids()
        self.io = PageIO(self.pager, crypt, config.crypt_deadline, stats, self.frames,
                         lambda kind, detail: event(kind, None, detail))
        self.pageins = PageIns(self.io)  # concurrent page-ins share their trips
        self._busy: dict[PTE, Busy] = {}  # pages being faulted in or evicted
        self.evictor = Evictor(self.res, self.frames, self._busy, self.pager, self.io, stats,
                               rng=self.handles.rng, reflog=self.reflog, trace=self.trace)
        self.readahead = ReadAhead(config.readahead, self.frames)
        self._streak = 0  # resident accesses since the last yield
        self.releaser = Releaser[PTE](self._release_now)
        send, self._discard_queue = trio.open_memory_channel[Discard](math.inf)
        # discards pooled across processes, sent in random batches (see _discards.py)
        self.discards = DiscardPool(lambda handles, after: send.send_nowait(
            Discard(handles, after)), rng=self.handles.rng)
        self.supply = FrameSupply(self.frames, self.res, self.evictor, self.discards, self.io,
                                  config.evict_batch)

    # -- address spaces ------------------------------------------------------------------

    def attach(self, dom: Domain) -> None:
        """Give a new process an address space (a reused asid gets a new incarnation)."""
        dom.aspace = AddressSpace(*self.asids.take())
        self.trace.owners[dom.aspace.asid] = dom.pid

    def detach(self, dom: Domain) -> None:
        """Process exit: free its frames now, tell the pager to discard its pages."""
        aspace = dom.aspace
        assert aspace is not None
        aspace.alive = False
        dom.usage.release("pages", aspace.mapped_pages)
        self.readahead.forget(aspace)
        if self.reflog is not None:
            self.reflog.drop_space(aspace)
        self.releaser.release(aspace.unmap_all())
        self.asids.put(aspace.asid)

    def _release_now(self, ptes: list[PTE]) -> None:
        """Unmapped pages: their frames freed, their handles discarded once not busy
        (a huge release goes on in steps, see :mod:`.release`)."""
        gone: list[tuple[int, trio.Event | None]] = []
        trace = self.trace.enabled
        for pte in ptes:
            if pte.present:
                self.frames.free(pte.frame)
                pte.present = False
            if pte.handle:
                busy = self._busy.get(pte)  # a discard waits for it: it gets an event
                gone.append((pte.handle, None if busy is None else busy.event()))
                if trace and pte.handle in self.res.handles:
                    self.trace.page("discard", pte.aspace.asid, pte.vpn, pte.handle)
        if gone:
            handles = [h for h, _busy in gone]
            self.res.forget(handles)
            if self.reflog is not None:
                self.reflog.forget(set(handles))
            self.discards.add(gone)
        if self.frames.free_count and self.supply.waiters:
            self.supply.waiters.wake_one()

    def mmap(self, dom: Domain, length: int, rights: Rights, addr: int | None) -> int:
        assert dom.aspace is not None
        return dom.aspace.mmap(length, rights, addr, dom.usage)

    def munmap(self, dom: Domain, addr: int, length: int) -> None:
        assert dom.aspace is not None
        self.releaser.release(dom.aspace.munmap(addr, length, dom.usage))

    # -- the fast path -------------------------------------------------------------------

    def _pte(self, aspace: AddressSpace, vpn: int, need: int) -> PTE:
        pte = aspace.touch(vpn)  # sparse page tables: the entry is made on first touch
        if pte is None:
            raise SegmentationFault(f"address {vpn * PAGE_SIZE:#x} is not mapped")
        if not pte.rights._value_ & need:
            what = "write" if need == _W else "read"
            raise ProtectionFault(f"{what} to {vpn * PAGE_SIZE:#x} denied ({pte.rights.short()})")
        return pte

    async def read(self, dom: Domain, addr: int, n: int) -> bytes:
        aspace = dom.aspace
        if aspace is None:
            raise SegmentationFault("bad read: no address space")
        if type(addr) is not int or type(n) is not int:
            check_span(addr, n, what="read")  # raises the typed error
        vpn, off = divmod(addr, PAGE_SIZE)
        pte = aspace.pages.get(vpn)
        if pte is not None and 0 < n <= PAGE_SIZE - off \
                and pte.rights._value_ & _R:  # one page it may read: the common case
            faulted = False
            while not pte.present:  # the fault is called from here: no frame between
                await self.fault(dom, vpn)
                faulted = True
                pte = aspace.pages.get(vpn)  # again: unmapped meanwhile, _pte raises
                if pte is None or not pte.rights._value_ & _R:
                    pte = self._pte(aspace, vpn, _R)
            if not pte.accessed:
                pte.accessed = True
                self.res.touched.append(pte)
            base = pte.frame * PAGE_SIZE + off
            out = self.frames.ram[base : base + n]
            if self.reflog is not None:
                self.reflog.note(pte.handle)
                await self._access_done(faulted)
            elif not faulted:
                self._streak += 1  # inlined: this is the hot path
                await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD
                       else self._yield())
            return bytes(out)
        return await self._pages(dom, aspace, addr, n, None)

    async def write(self, dom: Domain, addr: int, data: bytes) -> None:
        aspace = dom.aspace
        if aspace is None:
            raise SegmentationFault("bad write: no address space")
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ConfigError(f"write data must be bytes, not {type(data).__name__}")
            data = bytes(data)
        n = len(data)
        if type(addr) is not int:
            check_span(addr, n, what="write")  # raises the typed error
        vpn, off = divmod(addr, PAGE_SIZE)
        pte = aspace.pages.get(vpn)
        if pte is not None and 0 < n <= PAGE_SIZE - off \
                and pte.rights._value_ & _W:  # one page it may write: the common case
            faulted = False
            while not pte.present:  # as in read
                await self.fault(dom, vpn)
                faulted = True
                pte = aspace.pages.get(vpn)  # again: unmapped meanwhile, _pte raises
                if pte is None or not pte.rights._value_ & _W:
                    pte = self._pte(aspace, vpn, _W)
            base = pte.frame * PAGE_SIZE + off
            self.frames.ram[base : base + n] = data
            if not pte.dirty:
                pte.dirty = True
                self.res.dirtied.append(pte)
            if not pte.accessed:
                pte.accessed = True
                self.res.touched.append(pte)
            if self.reflog is not None:
                self.reflog.note(pte.handle)
                await self._access_done(faulted)
            elif not faulted:
                self._streak += 1  # inlined: this is the hot path
                await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD
                       else self._yield())
            return
        await self._pages(dom, aspace, addr, n, data)

    async def _pages(self, dom: Domain, aspace: AddressSpace, addr: int, n: int,
                     data: bytes | None) -> bytes:
        """An access off the fast path (several pages, a first touch, a bad address):
        writes ``data`` or reads ``n`` bytes, each page faulted in as need be."""
        write = data is not None
        if not aspace.alive:  # an access made before the process ended, run after it
            raise ProcessError(f"{dom.name!r} has ended: its memory is gone")
        addr, n = check_span(addr, n, what="write" if write else "read")
        aspace.check_access(addr, n, Rights.WRITE if write else Rights.READ)  # before
        buf = bytearray(0 if write else n)  # any byte lands or a buffer is allocated
        need, view = _W if write else _R, self.frames.view
        done = 0
        faulted = False
        while done < n:
            vpn, off = divmod(addr + done, PAGE_SIZE)
            if not (pte := self._pte(aspace, vpn, need)).present:
                await self.fault(dom, vpn)
                faulted = True
                continue
            if not pte.accessed:
                pte.accessed = True
                self.res.touched.append(pte)
            if self.reflog is not None:
                self.reflog.note(pte.handle)
            base, chunk = pte.frame * PAGE_SIZE + off, min(n - done, PAGE_SIZE - off)
            if data is None:
                buf[done : done + chunk] = view[base : base + chunk]
            else:
                view[base : base + chunk] = data[done : done + chunk]
                if not pte.dirty:
                    pte.dirty = True
                    self.res.dirtied.append(pte)
            done += chunk
        await self._access_done(faulted)
        return bytes(buf)

    async def _access_done(self, faulted: bool) -> None:
        """The end of an access: a full precise-mode log is reported now; an access that
        needed no fault or server call yields by the rule of the module docstring."""
        if self.reflog is not None and self.reflog.full:
            await self.evictor.observe()
        elif not faulted:
            self._streak += 1
            await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())

    async def settle_refs(self) -> None:
        """End of a batched access (:mod:`.batch`): report a full precise-mode log."""
        await self._access_done(True)
        await checkpoint()

    async def _yield(self) -> None:
        self._streak = 0
        await checkpoint()

    async def fault(self, dom: Domain, vpn: int) -> None:
        """The trap of a non-present page, resolved on the faulting task."""
        self._streak = 0
        calls = self.pager.calls + self.supply.waits
        try:
            aspace = dom.aspace
            assert aspace is not None
            pte = (aspace.pages.get(vpn) or aspace.touch(vpn)) if aspace.alive else None
            if pte is None or pte in self._busy:  # gone, or another task is on it: wait
                pte = await self._settled_pte(aspace, vpn)
            if not pte.present:
                busy = self._busy[pte] = Busy()
                try:
                    await self._fill(dom, aspace, vpn, pte)
                finally:
                    del self._busy[pte]
                    busy.set()
        except Fault:
            raise
        except Exception as exc:  # a kernel bug must not take the kernel down
            self.event("internal_error", dom, repr(exc))
            raise Fault(f"internal error in the fault path: {exc!r}") from None
        if self.pager.calls + self.supply.waits == calls:
            await checkpoint()  # a fault always yields, even one that waited for nothing

    # -- discards (the kernel's own task) ---------------------------------------------------

    async def run(self) -> None:
        """The kernel's discard task: each discard waits for its busy pages, then goes
        (a partial pool of discards is flushed after its delay)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.discards.run)
            nursery.start_soon(self.releaser.run)
            async for item in self._discard_queue:
                nursery.start_soon(self.io.discard, item)

    # -- resolving a fault ----------------------------------------------------------------

    async def _settled_pte(self, aspace: AddressSpace, vpn: int) -> PTE:
        """The page-table entry of ``vpn`` once no other task is faulting or evicting it."""
        while True:
            pte = aspace.touch(vpn) if aspace.alive else None
            if pte is None:
                raise SegmentationFault(f"address {vpn * PAGE_SIZE:#x} is not mapped")
            busy = self._busy.get(pte)
            if busy is None:
                return pte
            await busy.wait()

    async def _fill(self, dom: Domain, aspace: AddressSpace, vpn: int, pte: PTE) -> None:
        """Give a busy, non-present page a frame: zero-filled or paged in and verified
        (with its read-ahead cluster, if the fault continues a sequential run)."""
        stats = self.stats
        stats.faults += 1
        dom.faults += 1
        trace = self.trace
        started = trace.page("fault", aspace.asid, vpn, pte.handle) if trace.enabled else 0.0
        gather = False  # woken with other faults: page in together (see _pageins.py)
        try:  # a free frame (the common case) is taken with no coroutine of its own
            frame = self.frames.alloc()
            if frame is None:
                gather = self.supply.evicting  # it waits for the eviction under way
                frame = await self.supply.get(aspace)
        except BaseException as exc:
            if trace.enabled:
                trace.page("fault-error", aspace.asid, vpn, pte.handle, started, repr(exc))
            raise
        self.supply.filling += 1
        if pte.state == PageState.ZERO:
            stats.zero_fills += 1
            self._filled_one(aspace, vpn, pte, frame, None)
            if trace.enabled:
                trace.page("zero-fill", aspace.asid, vpn, pte.handle, started)
            return
        cluster = self.readahead.cluster(aspace, vpn, self._busy) if self.readahead.window else ()
        busy = self._busy[pte]  # read-ahead pages wait with the page: the caller settles it
        for _v, xpte, _f in cluster:
            self._busy[xpte] = busy
        self.supply.filling += len(cluster)
        plains: list[bytes | None] | None = None
        try:
            if cluster or (not gather and self.pageins.open is None):  # alone, as before
                plains = await self.io.fetch(aspace, vpn, pte, cluster)
            else:  # with the others of its burst
                plains = await self.pageins.fetch(aspace, vpn, pte, gather)
        except BaseException as exc:
            if trace.enabled:
                trace.page("fault-error", aspace.asid, vpn, pte.handle, started, repr(exc))
            raise
        finally:
            for _v, xpte, _f in cluster:
                del self._busy[xpte]
            if plains is None:  # failed or cancelled: every frame goes back
                self._filled_one(aspace, vpn, pte, frame, b"")
                for v, xpte, f in cluster:
                    self._filled_one(aspace, v, xpte, f, b"")
        if cluster:
            for (v, xpte, f), plain in zip(cluster, plains[1:], strict=True):
                self._filled_one(aspace, v, xpte, f, plain or b"")  # refused: stays swapped
        if plains[0] is None:
            self._filled_one(aspace, vpn, pte, frame, b"")
            if trace.enabled:
                trace.page("fault-error", aspace.asid, vpn, pte.handle, started,
                           "IntegrityFault")
            stats.integrity_faults += 1
            dom.integrity_faults += 1
            self.event("integrity_fault", dom, f"page {vpn * PAGE_SIZE:#x} refused")
            raise IntegrityFault(f"page {vpn * PAGE_SIZE:#x} of {dom.name!r} failed its seal "
                                 "check (tampered, stale or misplaced); not mapped")
        stats.page_ins += 1
        stats.readaheads += sum(1 for p in plains[1:] if p) if cluster else 0
        self._filled_one(aspace, vpn, pte, frame, plains[0])
        if trace.enabled:
            trace.page("page-in", aspace.asid, vpn, pte.handle, started,
                       f"+{len(cluster)} read ahead" if cluster else "")

    def _filled_one(self, aspace: AddressSpace, vpn: int, pte: PTE, frame: int,
                    plain: bytes | None) -> None:
        """A frame taken for a page-in comes back: mapped with ``plain`` (None: it is
        zero-filled already), or freed (b"": failed, or the page went away)."""
        self.supply.settled()
        if plain == b"" or not aspace.alive or aspace.pages.get(vpn) is not pte:
            self.supply.free(frame)
            return
        if plain is not None:
            start = frame * PAGE_SIZE
            self.frames.view[start : start + PAGE_SIZE] = plain
        # map it (inline, no call: every fault comes this way)
        if not pte.handle:
            pte.handle = self._new_handle()
            self.res.handles[pte.handle] = pte
        pte.frame = frame
        pte.present = True
        # ZERO/SWAPPED -> RESIDENT is always allowed: move() checks any other
        state = pte.state
        pte.state = _RESIDENT if state is _SWAPPED or state is _ZERO else move(state, _RESIDENT)
        pte.accessed = pte.dirty = False
        self.res.map(pte.handle, pte)

    def _new_handle(self) -> int:
        """An opaque page name for the pager: random (or derived from the boot seed), so
        it reveals no pid or address; never one still live or waiting to be discarded."""
        return self.handles.new(Taken(self.res.handles, self.discards))

    # -- statistics from the servers --------------------------------------------------------

    async def server_stats(self) -> dict[str, Any]:
        """The pager's and the sealer's own statistics (an error string for each that
        does not answer)."""
        return await server_stats(self.pager, self.crypt, self.config.crypt_deadline)
