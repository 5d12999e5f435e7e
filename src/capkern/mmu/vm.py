"""The fault path: demand-zero, sealed eviction and verified page-in (trusted).

Resident pages are read and written on the process's own task with no channel hop
(:meth:`VM.read`, :meth:`VM.write`).  A non-present page is a fault, resolved on the
faulting task itself (a trap runs kernel code on the faulting thread, no task is spawned
per fault), so a slow or hung pager delays only the faults that need it, each by at most
one deadline::

    fault -> [evict: pager chooses victims -> crypt seals -> pager stores]
          -> zero-fill, or pager fetch -> crypt unseal + binding/version check -> map

The VM holds no kernel: it gets its configuration (:class:`VMConfig`), the kernel's
counters, an event callback and one :class:`~capkern.mmu.ports.ServerPort` each for the
pager and the sealer.  Every call into the untrusted pager has a deadline.  Victims are
unmapped (not freed) while their sealed copies travel, so a process touching one just
faults and waits; a frame is freed only after the pager confirmed the store, so a failed
store loses no data.  Concurrency is kept safe by three rules: a page being faulted in or
evicted is *busy* and any other fault on it waits for that to end; one eviction runs at a
time (faults that need a frame meanwhile queue for the frames it frees, see
:mod:`.framewait`); and a discard waits until the pages it names are no longer busy, so
the pager never hears of a page after it was told to forget it.  Every step undoes itself
if the faulting task is cancelled (its process killed): frames go back, pages stay mapped.
The version of each page lives here, in trusted memory, and is bumped on every seal; a
page-in must carry exactly the version of the page's current sealed copy.

When a resident access yields: a read or write that needs no fault is a cancellation
point (a killed process stops at its next access) but yields to the scheduler only once
every :data:`RESIDENT_YIELD` accesses in a row, so a process touching only resident
memory runs at most that many accesses before the others get the CPU.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import checkpoint, checkpoint_if_cancelled

from ..cspace import Rights
from ..errors import (
    CapkernError,
    ConfigError,
    Fault,
    IntegrityFault,
    OutOfMemory,
    ProtectionFault,
    SegmentationFault,
)
from ..pagefmt import PAGE_SIZE
from ..protocols import MAX_BATCH
from .aspace import PTE, AddressSpace
from .evict import Evictor
from .frames import FrameTable
from .framewait import FrameWaiters
from .pageio import Discard, PageIO
from .ports import PagerLink, ServerPort
from .readahead import ReadAhead
from .residency import Residency

if TYPE_CHECKING:
    from ..domain import Domain
    from ..trace import Counters

__all__ = ["RESIDENT_YIELD", "VM", "EventSink", "VMConfig"]

RESIDENT_YIELD = 64  # resident accesses in a row before one yields to the scheduler
_R = Rights.READ._value_
_W = Rights.WRITE._value_

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


class VM:
    """Paging state of one booted kernel."""

    def __init__(self, config: VMConfig, stats: Counters, event: EventSink,
                 pager: ServerPort, crypt: ServerPort) -> None:
        self.config = config
        self.stats = stats
        self.event = event
        self.frames = FrameTable(config.ram_pages)
        self.pager = PagerLink(pager, config.pager_deadline, stats)
        self.crypt = crypt
        self.res = Residency()
        self._asid_free: list[int] = []
        self._asid_next = 1
        self.io = PageIO(self.pager, crypt, config.crypt_deadline, stats, self.frames,
                         lambda kind, detail: event(kind, None, detail))
        self._busy: dict[PTE, trio.Event] = {}  # pages being faulted in or evicted
        self.evictor = Evictor(self.res, self.frames, self._busy, self.pager, self.io, stats)
        self.readahead = ReadAhead(config.readahead, self.frames)
        self._evicting = False  # one eviction at a time
        self._waiters = FrameWaiters(self.frames)
        self._filling = 0  # frames held by faults in flight (allocated, not yet mapped)
        self._filled = trio.Event()  # set (and replaced) whenever such a fault ends
        self._incarnations: dict[int, int] = {}
        self._streak = 0  # resident accesses since the last yield
        self._calls = 0  # server calls made (each one yields)
        send, self._discards = trio.open_memory_channel[Discard](math.inf)
        self._submit = send

    # -- address spaces ------------------------------------------------------------------

    def attach(self, dom: Domain) -> None:
        """Give a new process an address space (a reused asid gets a new incarnation)."""
        if self._asid_free:
            asid = self._asid_free.pop()
        else:
            asid, self._asid_next = self._asid_next, self._asid_next + 1
        incarnation = self._incarnations.get(asid, -1) + 1
        self._incarnations[asid] = incarnation
        dom.aspace = AddressSpace(asid, incarnation)

    def detach(self, dom: Domain) -> None:
        """Process exit: free its frames now, tell the pager to discard its pages."""
        aspace = dom.aspace
        assert aspace is not None
        aspace.alive = False
        self.readahead.forget(aspace)
        self._release(list(aspace.pages.values()))
        aspace.pages.clear()
        self._asid_free.append(aspace.asid)

    def _release(self, ptes: list[PTE]) -> None:
        """Unmapped pages: free resident frames now (a busy page's frame is freed by the
        task working on it), and have the pager discard them once they are not busy."""
        handles = []
        after = [self._busy[pte] for pte in ptes if pte in self._busy]
        for pte in ptes:
            if pte.present:
                self.frames.free(pte.frame)
                pte.present = False
            if pte.handle:
                handles.append(pte.handle)
        if handles:
            self.res.forget(handles)
            self._submit.send_nowait(Discard(handles, after))
        if self.frames.free_count and self._waiters:
            self._waiters.wake_one()

    def mmap(self, dom: Domain, length: int, rights: Rights, addr: int | None) -> int:
        assert dom.aspace is not None
        if type(length) is not int or length < 1:
            raise ConfigError(f"mmap length must be a positive int, not {length!r}")
        return dom.aspace.map_region(-(-length // PAGE_SIZE), rights, addr)

    def munmap(self, dom: Domain, addr: int, length: int) -> None:
        assert dom.aspace is not None
        self._release(dom.aspace.unmap_region(addr, length))

    # -- the fast path -------------------------------------------------------------------

    def _pte(self, aspace: AddressSpace, vpn: int, need: int) -> PTE:
        pte = aspace.pages.get(vpn)
        if pte is None:
            raise SegmentationFault(f"address {vpn * PAGE_SIZE:#x} is not mapped")
        if not pte.rights._value_ & need:
            what = "write" if need == _W else "read"
            raise ProtectionFault(f"{what} to {vpn * PAGE_SIZE:#x} denied ({pte.rights.short()})")
        return pte

    async def read(self, dom: Domain, addr: int, n: int) -> bytes:
        aspace = dom.aspace
        if aspace is None or n < 0 or addr < 0:
            raise SegmentationFault("bad read")
        vpn, off = divmod(addr, PAGE_SIZE)
        pte = aspace.pages.get(vpn)
        if pte is not None and pte.present and off + n <= PAGE_SIZE \
                and pte.rights._value_ & _R:  # one resident page: the common case
            if not pte.accessed:
                pte.accessed = True
                self.res.touched.append(pte)
            base = pte.frame * PAGE_SIZE + off
            out = self.frames.ram[base : base + n]
            self._streak += 1  # inlined: this is the hot path
            await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())
            return bytes(out)
        buf = bytearray(n)
        done = 0
        faulted = False
        while done < n:
            pte, base, chunk, f = await self._span(dom, aspace, addr + done, n - done, _R)
            faulted |= f
            buf[done : done + chunk] = self.frames.view[base : base + chunk]
            done += chunk
        if not faulted:
            self._streak += 1  # inlined: this is the hot path
            await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())
        return bytes(buf)

    async def write(self, dom: Domain, addr: int, data: bytes) -> None:
        aspace = dom.aspace
        if aspace is None or addr < 0:
            raise SegmentationFault("bad write")
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        vpn, off = divmod(addr, PAGE_SIZE)
        pte = aspace.pages.get(vpn)
        if pte is not None and pte.present and off + n <= PAGE_SIZE \
                and pte.rights._value_ & _W:  # one resident page: the common case
            base = pte.frame * PAGE_SIZE + off
            self.frames.ram[base : base + n] = data
            if not pte.dirty:
                pte.dirty = True
                self.res.dirtied.append(pte)
            if not pte.accessed:
                pte.accessed = True
                self.res.touched.append(pte)
            self._streak += 1  # inlined: this is the hot path
            await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())
            return
        done = 0
        faulted = False
        while done < n:
            pte, base, chunk, f = await self._span(dom, aspace, addr + done, n - done, _W)
            faulted |= f
            self.frames.view[base : base + chunk] = data[done : done + chunk]
            if not pte.dirty:
                pte.dirty = True
                self.res.dirtied.append(pte)
            done += chunk
        if not faulted:
            self._streak += 1  # inlined: this is the hot path
            await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())

    async def _span(self, dom: Domain, aspace: AddressSpace, addr: int, left: int,
                    need: int) -> tuple[PTE, int, int, bool]:
        """The resident piece at ``addr`` (faulted in first if need be): its entry, RAM
        offset, length, and whether it faulted.  Marks it accessed."""
        vpn, off = divmod(addr, PAGE_SIZE)
        faulted = False
        while not (pte := self._pte(aspace, vpn, need)).present:
            await self.fault(dom, vpn)
            faulted = True
        if not pte.accessed:
            pte.accessed = True
            self.res.touched.append(pte)
        return pte, pte.frame * PAGE_SIZE + off, min(left, PAGE_SIZE - off), faulted

    async def _resident_done(self) -> None:
        """The end of an access that needed no fault (see the module docstring)."""
        self._streak += 1
        await (checkpoint_if_cancelled() if self._streak < RESIDENT_YIELD else self._yield())

    async def _yield(self) -> None:
        self._streak = 0
        await checkpoint()

    async def fault(self, dom: Domain, vpn: int) -> None:
        """The trap of a non-present page, resolved on the faulting task."""
        self._streak = 0
        calls = self._calls
        try:
            await self._resolve(dom, vpn)
        except Fault:
            raise
        except Exception as exc:  # a kernel bug must not take the kernel down
            self.event("internal_error", dom, repr(exc))
            raise Fault(f"internal error in the fault path: {exc!r}") from None
        if self._calls == calls:
            await checkpoint()  # a fault always yields, even one that needed no server

    # -- discards (the kernel's own task) ---------------------------------------------------

    async def run(self) -> None:
        """The kernel's discard task: each discard waits for its busy pages, then goes."""
        async with trio.open_nursery() as nursery:
            async for item in self._discards:
                nursery.start_soon(self.io.discard, item)

    # -- resolving a fault ----------------------------------------------------------------

    async def _settled_pte(self, aspace: AddressSpace, vpn: int) -> PTE:
        """The page-table entry of ``vpn`` once no other task is faulting or evicting it."""
        while True:
            pte = aspace.pages.get(vpn)
            if not aspace.alive or pte is None:
                raise SegmentationFault(f"address {vpn * PAGE_SIZE:#x} is not mapped")
            busy = self._busy.get(pte)
            if busy is None:
                return pte
            await busy.wait()

    async def _resolve(self, dom: Domain, vpn: int) -> None:
        assert dom.aspace is not None
        aspace = dom.aspace
        pte = await self._settled_pte(aspace, vpn)
        if pte.present:
            return
        busy = self._busy[pte] = trio.Event()
        try:
            await self._fill(dom, aspace, vpn, pte)
        finally:
            del self._busy[pte]
            busy.set()

    async def _fill(self, dom: Domain, aspace: AddressSpace, vpn: int, pte: PTE) -> None:
        """Give a busy, non-present page a frame: zero-filled or paged in and verified
        (with its read-ahead cluster, if the fault continues a sequential run)."""
        stats = self.stats
        stats.faults += 1
        dom.faults += 1
        frame = await self._get_frame()
        self._filling += 1
        if pte.state == "zero":
            stats.zero_fills += 1
            self._filled_one(aspace, vpn, pte, frame, None)
            return
        cluster = self.readahead.cluster(aspace, vpn, self._busy)
        busy = trio.Event()
        for _v, xpte, _f in cluster:
            self._busy[xpte] = busy
        self._filling += len(cluster)
        plains: list[bytes | None] = []
        try:
            self._calls += 1
            plains = await self.io.fetch([(aspace, vpn, pte)] +
                                         [(aspace, v, p) for v, p, _f in cluster])
        finally:
            for _v, xpte, _f in cluster:
                del self._busy[xpte]
            busy.set()
            if not plains:  # failed or cancelled: every frame goes back
                self._filled_one(aspace, vpn, pte, frame, b"")
                for v, xpte, f in cluster:
                    self._filled_one(aspace, v, xpte, f, b"")
        for (v, xpte, f), plain in zip(cluster, plains[1:], strict=True):
            self._filled_one(aspace, v, xpte, f, plain or b"")  # refused: stays swapped
        if plains[0] is None:
            self._filled_one(aspace, vpn, pte, frame, b"")
            stats.integrity_faults += 1
            dom.integrity_faults += 1
            self.event("integrity_fault", dom, f"page {vpn * PAGE_SIZE:#x} refused")
            raise IntegrityFault(
                f"page {vpn * PAGE_SIZE:#x} of {dom.name!r} failed its seal check "
                "(tampered, stale or misplaced); not mapped"
            )
        stats.page_ins += 1
        stats.readaheads += sum(1 for p in plains[1:] if p)
        self._filled_one(aspace, vpn, pte, frame, plains[0])

    def _filled_one(self, aspace: AddressSpace, vpn: int, pte: PTE, frame: int,
                    plain: bytes | None) -> None:
        """A frame taken for a page-in comes back: mapped with ``plain`` (None: it is
        zero-filled already), or freed (b"": failed, or the page went away)."""
        self._filling -= 1
        self._filled.set()
        self._filled = trio.Event()
        if plain == b"" or not aspace.alive or aspace.pages.get(vpn) is not pte:
            self._free_frame(frame)
            return
        if plain is not None:
            self.frames.frame(frame)[:] = plain
        self._map(aspace, vpn, pte, frame)

    def _free_frame(self, frame: int) -> None:
        self.frames.free(frame)
        if self._waiters:
            self._waiters.wake_one()

    def _map(self, aspace: AddressSpace, vpn: int, pte: PTE, frame: int) -> None:
        if not pte.handle:
            pte.handle = self._new_handle()
            self.res.handles[pte.handle] = (aspace, vpn)
        pte.frame = frame
        pte.present = True
        pte.state = "resident"
        pte.accessed = pte.dirty = False
        self.res.map(pte.handle, pte)

    def _new_handle(self) -> int:
        """An opaque page name for the pager: random, so it reveals no pid or address."""
        while True:
            handle = secrets.randbits(63) or 1
            if handle not in self.res.handles:
                return handle

    async def _get_frame(self) -> int:
        """A free frame, evicting a batch if RAM is full.

        One eviction runs at a time.  A fault that needs a frame while one is under way
        queues for a frame it frees, or fails with it -- so when the pager hangs, every
        fault waiting for memory fails after one eviction's deadlines, not one after the
        other -- and an eviction wakes as many waiters as it freed frames.
        """
        while True:
            frame = self.frames.alloc()
            if frame is not None:
                return frame
            if self._evicting:
                got = await self._waiters.wait()
                if got is not None:
                    return got
                continue
            if not self.res:
                if not self._filling:
                    raise self._out_of_memory()
                await self._filled.wait()  # every frame is on its way to a page
                continue
            self._evicting = True
            try:
                self._calls += 1
                victims, freed = await self.evictor.evict(min(self.config.evict_batch,
                                                              MAX_BATCH))
            except BaseException:
                self._evicting = False
                self._waiters.hand_out()  # the next in line evicts instead
                raise
            self._evicting = False
            if victims and not freed and not self.frames.free_count:
                error = self._out_of_memory()  # the pager would not take the pages
                self._waiters.fail_all(error)
                raise error
            frame = self.frames.alloc()
            self._waiters.hand_out()
            if frame is not None:
                return frame
            # the victims went away meanwhile (their process exited): try again

    def _out_of_memory(self) -> OutOfMemory:
        why = f": the evicted pages could not be stored ({self.io.store_error})" \
            if self.io.store_error else ""
        return OutOfMemory(f"no frame could be freed{why}")

    # -- statistics from the servers --------------------------------------------------------

    async def server_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["crypt"] = await self.crypt.call("stats", {}, self.config.crypt_deadline)
        except CapkernError as exc:
            out["crypt"] = {"error": str(exc)}
        try:
            out["pager"] = await self.pager.call("stats", {})
        except CapkernError as exc:
            out["pager"] = {"error": str(exc)}
        return out
