"""The fault path: demand-zero, sealed eviction and verified page-in (trusted).

Resident pages are read and written on the process's own task with no channel hop
(:meth:`VM.read`, :meth:`VM.write`).  A non-present page is a fault: the process's trap
queues it to the kernel's fault path, which resolves each fault in its own task (in a
nursery the fault path owns), so a slow or hung pager delays only the faults that need
it, each by at most one deadline::

    fault -> [evict: pager chooses victims -> crypt seals -> pager stores]
          -> zero-fill, or pager fetch -> crypt unseal + binding/version check -> map

Every call into the untrusted pager has a deadline.  Victims are unmapped (not freed)
while their sealed copies travel, so a process touching one just faults and waits; a
frame is freed only after the pager confirmed the store, so a failed store loses no data.
Concurrency is kept safe by three rules: a page being faulted in or evicted is *busy*
and any other fault on it waits for that to end; one eviction runs at a time (faults
that need a frame meanwhile share its outcome); and a discard waits until the pages it
names are no longer busy, so the pager never hears of a page after it was told to
forget it.  Versions live here, in trusted memory: every seal draws the next value of
one boot-wide counter (:mod:`.binding`), and a page-in must carry exactly the version of
the page's current sealed copy, so no binding ever repeats within a boot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .. import ipc
from ..config import Grant
from ..cspace import Cap, Rights
from ..errors import (
    CapkernError,
    ConfigError,
    ContractViolation,
    Fault,
    IntegrityFault,
    IPCError,
    OutOfMemory,
    PageInError,
    PageLost,
    PagerUnavailable,
    ProtectionFault,
    SegmentationFault,
    ServerError,
)
from ..ipc import Endpoint, Received
from ..pagefmt import PAGE_SIZE
from ..protocols import BLOCKDEV, CRYPT, MAX_BATCH, PAGER
from .aspace import PTE, AddressSpace, check_span
from .binding import Versions, binding
from .discards import DiscardPool, shuffled
from .frames import FrameTable
from .reflog import HandleSource, ReferenceLog

if TYPE_CHECKING:
    from ..config import BootConfig
    from ..domain import Domain
    from ..kernel import Kernel

__all__ = ["VM", "start_paging"]

MAX_REPORT = 1 << 16  # the PAGER contract's list bound
_R = Rights.READ._value_
_W = Rights.WRITE._value_


@dataclass
class _FaultItem:
    dom: Domain | None
    vpn: int
    done: trio.Event = field(default_factory=trio.Event)
    error: CapkernError | None = None
    discard: list[int] | None = None
    after: list[trio.Event] = field(default_factory=list)  # a discard waits for these


#: an eviction victim: (handle, address space, virtual page, page-table entry)
_Victim = tuple[int, AddressSpace, int, PTE]


@dataclass
class _Eviction:
    """One eviction under way; faults that need a frame meanwhile share its outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    victims: int = 0
    freed: int = 0


class _Taken:
    """Handles a new page must not get: live ones and ones waiting to be discarded."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: Container[int], b: Container[int]) -> None:
        self._a, self._b = a, b

    def __contains__(self, handle: object) -> bool:
        return handle in self._a or handle in self._b


class VM:
    """Paging state of one booted kernel."""

    def __init__(self, kernel: Kernel, boot_id: bytes, pager: Cap, crypt: Cap) -> None:
        self.kernel = kernel
        self.boot_id = boot_id
        self.frames = FrameTable(kernel.config.ram_pages)
        self._pager = pager
        self._crypt = crypt
        self._handles: dict[int, tuple[AddressSpace, int]] = {}  # opaque handle -> page
        self._resident: dict[int, None] = {}  # handles of resident pages, in mapping order
        self._mapped: list[int] = []  # mapped since the pager last heard
        self._asid_free: list[int] = []
        self._asid_next = 1
        self._store_error = ""  # why the last eviction could not store its pages
        self._busy: dict[PTE, trio.Event] = {}  # pages being faulted in or evicted
        self._eviction: _Eviction | None = None  # the eviction under way
        self._filling = 0  # frames held by faults in flight (allocated, not yet mapped)
        self._filled = trio.Event()  # set (and replaced) whenever such a fault ends
        self._incarnations: dict[int, int] = {}
        self._handle_source = HandleSource(kernel.config.seed)
        # precise mode: every reference, in order, for the pager (see reflog.py)
        self.reflog = ReferenceLog(MAX_REPORT, self._handle_source) \
            if kernel.config.precise else None
        self._faulter: AddressSpace | None = None  # whose fault the next eviction serves
        send, self._queue = trio.open_memory_channel[_FaultItem](math.inf)
        self._submit = send
        self._ptrace = kernel.page_trace  # page events (fault, page-in, eviction...)
        self.versions = Versions()  # one boot-wide counter: no binding ever repeats
        self._rng = self._handle_source.rng
        self._discards = DiscardPool(self._send_discard, rng=self._rng)  # pooled across processes

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
        self._ptrace.owners[asid] = dom.pid

    def detach(self, dom: Domain) -> None:
        """Process exit: free its frames now, tell the pager to discard its pages."""
        aspace = dom.aspace
        assert aspace is not None
        aspace.alive = False
        dom.usage.release("pages", aspace.mapped_pages)
        if self.reflog is not None:
            self.reflog.drop_space(aspace)
        self._release(aspace.unmap_all())
        self._asid_free.append(aspace.asid)

    def _release(self, ptes: list[PTE]) -> None:
        """Unmapped pages: free resident frames now (a busy page's frame is freed by the
        task working on it), and have the pager discard them once they are not busy."""
        gone: list[tuple[int, trio.Event | None]] = []
        for pte in ptes:
            if pte.present:
                self.frames.free(pte.frame)
                pte.present = False
            if pte.handle:
                where = self._handles.pop(pte.handle, None)
                self._resident.pop(pte.handle, None)
                gone.append((pte.handle, self._busy.get(pte)))
                if self._ptrace.enabled and where is not None:
                    self._ptrace.page("discard", where[0].asid, where[1], pte.handle)
        if gone:
            dead = {h for h, _busy in gone}
            self._mapped = [h for h in self._mapped if h not in dead]
            if self.reflog is not None:
                self.reflog.forget(dead)
            self._discards.add(gone)

    def _send_discard(self, handles: list[int], after: list[trio.Event]) -> None:
        self._submit.send_nowait(_FaultItem(None, 0, discard=handles, after=after))

    def mmap(self, dom: Domain, length: int, rights: Rights, addr: int | None) -> int:
        assert dom.aspace is not None
        return dom.aspace.mmap(length, rights, addr, dom.usage)

    def munmap(self, dom: Domain, addr: int, length: int) -> None:
        assert dom.aspace is not None
        self._release(dom.aspace.munmap(addr, length, dom.usage))

    # -- the fast path -------------------------------------------------------------------

    def _pte(self, aspace: AddressSpace, vpn: int, need: int) -> PTE:
        pte = aspace.touch(vpn)
        if pte is None:
            raise SegmentationFault(f"address {vpn * PAGE_SIZE:#x} is not mapped")
        if not pte.rights._value_ & need:
            what = "write" if need == _W else "read"
            raise ProtectionFault(f"{what} to {vpn * PAGE_SIZE:#x} denied ({pte.rights.short()})")
        return pte

    def _span(self, aspace: AddressSpace, addr: int, left: int,
              need: int) -> tuple[PTE, int, int] | int:
        """The resident piece at ``addr``: (pte, RAM offset, length), or the vpn to fault."""
        vpn, off = divmod(addr, PAGE_SIZE)
        pte = self._pte(aspace, vpn, need)
        if not pte.present:
            return vpn
        return pte, pte.frame * PAGE_SIZE + off, min(left, PAGE_SIZE - off)

    async def read(self, dom: Domain, addr: int, n: int) -> bytes:
        aspace = dom.aspace
        if aspace is None:
            raise SegmentationFault("bad read")
        addr, n = check_span(addr, n, what="read")
        aspace.check_access(addr, n, Rights.READ)  # before the buffer is allocated
        out = bytearray(n)
        done = 0
        while done < n:
            span = self._span(aspace, addr + done, n - done, _R)
            if isinstance(span, int):
                await self.fault(dom, span)
                continue
            pte, base, chunk = span
            out[done : done + chunk] = self.frames.view[base : base + chunk]
            pte.accessed = True
            if self.reflog is not None:
                self.reflog.note(pte.handle)
            done += chunk
        await self.settle_refs()
        return bytes(out)

    async def write(self, dom: Domain, addr: int, data: bytes) -> None:
        aspace = dom.aspace
        if aspace is None:
            raise SegmentationFault("bad write")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"write data must be bytes, not {type(data).__name__}")
        addr, _n = check_span(addr, len(data), what="write")
        aspace.check_access(addr, len(data), Rights.WRITE)  # before any byte lands
        data = bytes(data)
        done = 0
        while done < len(data):
            span = self._span(aspace, addr + done, len(data) - done, _W)
            if isinstance(span, int):
                await self.fault(dom, span)
                continue
            pte, base, chunk = span
            self.frames.view[base : base + chunk] = data[done : done + chunk]
            pte.accessed = pte.dirty = True
            if self.reflog is not None:
                self.reflog.note(pte.handle)
            done += chunk
        await self.settle_refs()

    async def fault(self, dom: Domain, vpn: int) -> None:
        """The trap of a non-present page: queue it to the kernel and wait."""
        item = _FaultItem(dom, vpn)
        self._submit.send_nowait(item)
        await item.done.wait()
        if item.error is not None:
            raise item.error

    # -- the kernel's fault path ----------------------------------------------------------

    async def run(self) -> None:
        """The kernel's fault path: one task per queued fault or discard."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._discards.run)
            async for item in self._queue:
                nursery.start_soon(self._serve, item)

    async def _serve(self, item: _FaultItem) -> None:
        try:
            if item.discard is not None:
                for busy in item.after:
                    await busy.wait()
                await self._discard(item.discard)
            else:
                await self._resolve(item)
        except Fault as exc:
            item.error = exc
        except Exception as exc:  # a kernel bug must not take the kernel down
            item.error = Fault(f"internal error in the fault path: {exc!r}")
            if item.dom is not None:
                self.kernel.event("internal_error", item.dom, repr(exc))
        finally:
            item.done.set()

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

    async def _resolve(self, item: _FaultItem) -> None:
        dom = item.dom
        assert dom is not None and dom.aspace is not None
        aspace = dom.aspace
        pte = await self._settled_pte(aspace, item.vpn)
        if pte.present:
            return
        busy = self._busy[pte] = trio.Event()
        try:
            await self._fill(dom, aspace, item.vpn, pte)
        finally:
            del self._busy[pte]
            busy.set()

    async def _fill(self, dom: Domain, aspace: AddressSpace, vpn: int, pte: PTE) -> None:
        """Give a busy, non-present page a frame: zero-filled or paged in and verified."""
        stats = self.kernel.stats
        stats.faults += 1
        dom.faults += 1
        trace = self._ptrace.enabled
        started = self._ptrace.page("fault", aspace.asid, vpn, pte.handle) if trace else 0.0
        self._faulter = aspace
        try:
            frame = await self._get_frame()
        except BaseException as exc:
            if trace:
                self._ptrace.page("fault-error", aspace.asid, vpn, pte.handle, started, repr(exc))
            raise
        self._filling += 1
        try:
            if pte.state == "zero":
                stats.zero_fills += 1
            else:
                await self._page_in(dom, aspace, vpn, pte, frame)
        except BaseException as exc:
            self.frames.free(frame)
            if trace:
                self._ptrace.page("fault-error", aspace.asid, vpn, pte.handle, started, repr(exc))
            raise
        else:
            kind = "zero-fill" if pte.state == "zero" else "page-in"
            if not aspace.alive or aspace.pages.get(vpn) is not pte:
                self.frames.free(frame)  # unmapped while we waited: nothing to map
            else:
                self._map(aspace, vpn, pte, frame)
            if trace:
                self._ptrace.page(kind, aspace.asid, vpn, pte.handle, started)
        finally:
            self._filling -= 1
            self._filled.set()
            self._filled = trio.Event()

    def _map(self, aspace: AddressSpace, vpn: int, pte: PTE, frame: int) -> None:
        if not pte.handle:
            pte.handle = self._new_handle()
            self._handles[pte.handle] = (aspace, vpn)
        pte.frame = frame
        pte.present = True
        pte.state = "resident"
        pte.accessed = pte.dirty = False
        self._resident[pte.handle] = None
        self._mapped.append(pte.handle)

    def _new_handle(self) -> int:
        """An opaque page name for the pager: random (or derived from the boot seed), so
        it reveals no pid or address; never one still live or waiting to be discarded."""
        return self._handle_source.new(_Taken(self._handles, self._discards))

    async def _get_frame(self) -> int:
        """A free frame, evicting a batch if RAM is full.

        One eviction runs at a time.  A fault that needs a frame while one is under way
        shares its outcome instead of queueing another: it takes a frame the eviction
        freed, or fails with it -- so when the pager hangs, every fault waiting for
        memory fails after one eviction's deadlines, not one after the other.
        """
        while True:
            frame = self.frames.alloc()
            if frame is not None:
                return frame
            eviction = self._eviction
            if eviction is None:
                if not self._resident:
                    if not self._filling:
                        raise self._out_of_memory()
                    await self._filled.wait()  # every frame is on its way to a page
                    continue
                eviction = self._eviction = _Eviction()
                try:
                    eviction.victims, eviction.freed = await self._evict(
                        min(self.kernel.config.evict_batch, MAX_BATCH))
                finally:
                    self._eviction = None
                    eviction.done.set()
            else:
                await eviction.done.wait()
            if eviction.victims and not eviction.freed and not self.frames.free_count:
                raise self._out_of_memory()  # the pager would not take the pages
            # frames were freed (others may take them first), or the victims went away
            # meanwhile (their process exited): try again

    def _out_of_memory(self) -> OutOfMemory:
        why = f": the evicted pages could not be stored ({self._store_error})" \
            if self._store_error else ""
        return OutOfMemory(f"no frame could be freed{why}")

    # -- calls to servers, with deadlines --------------------------------------------------

    async def _call(self, cap: Cap, label: str, body: Any, deadline: float) -> Any:
        """Call a server as the kernel; returns the ok body or raises typed errors."""
        root = self.kernel.root
        msg = ipc.make_message(root, cap, label, body, None, ())
        with trio.move_on_after(deadline):
            got = await ipc.send(root, cap, msg, call=True)
            assert isinstance(got, Received)
            return got.ok()
        raise PagerUnavailable(f"{cap.obj.label()} did not answer {label!r} within {deadline}s")

    async def _pager_call(self, label: str, body: Any) -> Any:
        try:
            return await self._call(self._pager, label, body, self.kernel.config.pager_deadline)
        except PagerUnavailable:
            self.kernel.stats.pager_timeouts += 1
            raise
        except (ContractViolation, IPCError) as exc:
            if isinstance(exc, ServerError):
                raise
            self.kernel.stats.pager_protocol_errors += 1
            raise PagerUnavailable(f"pager failed {label!r}: {exc}") from None

    async def _crypt_call(self, label: str, body: Any) -> Any:
        return await self._call(self._crypt, label, body, self.kernel.config.crypt_deadline)

    # -- eviction -----------------------------------------------------------------------

    def _harvest(self) -> tuple[list[int], list[int]]:
        """Collect and clear accessed bits; list dirty pages (what a pager policy sees)."""
        referenced, dirty = [], []
        for handle in self._resident:
            aspace, vpn = self._handles[handle]
            pte = aspace.pages[vpn]
            if pte.accessed:
                referenced.append(handle)
                pte.accessed = False
            if pte.dirty:
                dirty.append(handle)
        return referenced, dirty

    def _report(self) -> dict[str, Any]:
        """What the pager hears with its next request: pages mapped since it last heard,
        the references (harvested bits, or in precise mode every reference in order, with
        next uses when an oracle batch ran) and the dirty pages."""
        referenced, dirty = self._harvest()
        # bounded: if a broken pager never hears of some pages, it just cannot pick them
        mapped = list(dict.fromkeys(self._mapped))[-MAX_REPORT:]
        self._mapped = []
        # mapped stays in mapping order (FIFO needs it); the sets go out shuffled; a
        # precise boot's reference log is in reference order (that is its point)
        body: dict[str, Any] = {"mapped": mapped, "dirty": shuffled(dirty[-MAX_REPORT:], self._rng)}
        if self.reflog is None:
            body["referenced"] = shuffled(referenced[-MAX_REPORT:], self._rng)
        else:
            body["spaces"] = [self.reflog.tag(self._handles[h][0]) for h in mapped]
            refs, future = self.reflog.take()
            body["referenced"] = refs[-MAX_REPORT:]
            if future is not None:
                body["next_use"] = future[-MAX_REPORT:]
        return body

    async def settle_refs(self) -> None:
        """End of an access syscall: in precise mode, report a full reference log to
        the pager before it outgrows one message; otherwise just a checkpoint."""
        if self.reflog is not None and self.reflog.full:
            body = self._report()
            try:
                await self._pager_call("observe", body)
            except (Fault, ServerError) as exc:
                self._unheard(body)
                self.kernel.event("pager_error", self.kernel.root, f"observe: {exc}")
        await trio.lowlevel.checkpoint()

    def _unheard(self, body: dict[str, Any]) -> None:
        """A report the pager did not take: its still-mapped pages go in the next one
        (references are lost: a policy's knowledge costs speed only)."""
        self._mapped[:0] = [h for h in body["mapped"] if h in self._handles]

    async def _choose_victims(self, n: int) -> list[int]:
        body = self._report()
        body["n"] = n
        if self.reflog is not None and self._faulter is not None and self._faulter.alive:
            body["for"] = self.reflog.tag(self._faulter)
        chosen: list[int] = []
        try:
            reply = await self._pager_call("evict", body)
            chosen = reply["victims"]
        except (Fault, ServerError) as exc:
            self._unheard(body)
            self.kernel.event("pager_error", self.kernel.root, f"evict: {exc}")
        victims = list(dict.fromkeys(h for h in chosen if h in self._resident))[:n]
        if not victims:  # a policy's bad choice costs speed only: fall back to FIFO
            victims = list(self._resident)[:n]
        return victims

    async def _evict(self, n: int) -> tuple[int, int]:
        """Evict up to ``n`` pages; return how many were chosen and how many frames that
        freed (fewer when the pager did not store some: those stay resident)."""
        self._discards.flush()  # the pager may need the swap slots of dead pages now
        victims = await self._choose_victims(n)
        pages: list[_Victim] = []
        busy = trio.Event()
        for h in victims:  # unmap first: a touch now faults and waits for us
            aspace, vpn = self._handles[h]
            pte = aspace.pages[vpn]
            pte.present = False
            self._resident.pop(h, None)
            self._busy[pte] = busy
            pages.append((h, aspace, vpn, pte))
        # a page never written since its zero-fill goes back to demand-zero, unsealed:
        # its next touch reads zeros without asking the pager for anything
        to_seal = [v for v in pages if v[3].dirty]
        stored: set[int] = set()
        freed = 0
        try:
            if to_seal:
                stored = await self._seal_and_store(to_seal)
        finally:
            for victim in pages:
                freed += self._settle_victim(victim, victim in to_seal, stored)
            busy.set()
        self.kernel.stats.clean_drops += len(pages) - len(to_seal)
        return len(pages), freed

    def _settle_victim(self, victim: _Victim, sealed: bool, stored: set[int]) -> bool:
        """After the store: free the frame (True), or map the page again if its sealed
        copy did not make it (False)."""
        h, aspace, vpn, pte = victim
        del self._busy[pte]
        if not aspace.alive or aspace.pages.get(vpn) is not pte:
            self.frames.free(pte.frame)  # unmapped meanwhile: the frame is ours to free
            pte.frame = -1
        elif not sealed or h in stored:
            self._drop(pte)
            if self._ptrace.enabled:
                self._ptrace.page("eviction", aspace.asid, vpn, h, None, "" if sealed else "clean")
        else:  # keep the data resident: no data is lost
            self.kernel.stats.store_failures += 1
            pte.present = True
            self._resident[h] = None
            self._mapped.append(h)
            return False
        return True

    def _drop(self, pte: PTE) -> None:
        self.frames.free(pte.frame)
        pte.frame = -1
        pte.state = "swapped" if pte.sealed_version is not None else "zero"
        self.kernel.stats.evictions += 1

    async def _seal_and_store(self, pages: list[_Victim]) -> set[int]:
        pages, bindings, errors = self.versions.seal_batch(pages)
        for error in errors:  # those pages stay resident; the rest of the batch goes on
            self.kernel.event("internal_error", self.kernel.root, error)
        if not pages:
            return set()
        items = [[b, bytes(self.frames.frame(v[3].frame))] for v, b in zip(pages, bindings,
                                                                          strict=True)]
        sealed = await self._crypt_call("seal", {"pages": items})
        blobs = sealed["blobs"]
        if len(blobs) != len(items):
            raise Fault("sealer returned the wrong number of pages")
        self.kernel.stats.seals += len(blobs)
        body = {"pages": [[v[0], blob] for v, blob in zip(pages, blobs, strict=True)]}
        try:
            reply = await self._pager_call("store", body)
        except (Fault, ServerError) as exc:
            self.kernel.event("pager_error", self.kernel.root, f"store: {exc}")
            self._store_error = f"pager: {exc}"
            return set()
        stored = set(reply["stored"]) & {v[0] for v in pages}  # only what was sent
        self._store_error = "" if stored else "the pager stored none of them"
        for h, _aspace, _vpn, pte in pages:
            if h in stored:
                pte.sealed_version = pte.version
                pte.dirty = False
        return stored

    # -- page-in ------------------------------------------------------------------------

    async def _page_in(self, dom: Domain, aspace: AddressSpace, vpn: int, pte: PTE,
                       frame: int) -> None:
        stats = self.kernel.stats
        try:
            reply = await self._pager_call("fetch", {"handle": pte.handle})
        except ServerError as exc:
            stats.page_in_errors += 1
            raise (PageLost if exc.reason == "lost" else PageInError)(
                exc.reason, exc.detail) from None
        assert pte.sealed_version is not None
        bound = binding(aspace, vpn, pte.sealed_version)
        result = await self._crypt_call("unseal", {"pages": [[bound, reply["blob"]]]})
        stats.unseals += 1
        if not result["ok"] or not result["ok"][0]:
            stats.integrity_faults += 1
            dom.integrity_faults += 1
            self.kernel.event("integrity_fault", dom, f"page {vpn * PAGE_SIZE:#x} refused")
            raise IntegrityFault(
                f"page {vpn * PAGE_SIZE:#x} of {dom.name!r} failed its seal check "
                "(tampered, stale or misplaced); not mapped"
            )
        self.frames.frame(frame)[:] = result["plain"][0]
        stats.page_ins += 1

    async def _discard(self, handles: list[int]) -> None:
        try:
            await self._pager_call("discard", {"handles": handles})
        except (Fault, ServerError) as exc:
            self.kernel.event("pager_error", self.kernel.root, f"discard: {exc}")

    # -- statistics from the servers --------------------------------------------------------

    async def server_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out["crypt"] = await self._crypt_call("stats", {})
        except CapkernError as exc:
            out["crypt"] = {"error": str(exc)}
        try:
            out["pager"] = await self._pager_call("stats", {})
        except CapkernError as exc:
            out["pager"] = {"error": str(exc)}
        return out


def check_paging_config(cfg: BootConfig) -> None:
    """Boot-time checks of the paging options, before any task starts (raise ConfigError)."""
    if cfg.pager is None:
        _default_pager(cfg.policy)
    elif isinstance(cfg.pager, str):
        from ..isolation.spec import parse_tcp

        parse_tcp(cfg.pager)


async def start_paging(kernel: Kernel) -> None:
    """Start the sealer, block device and pager domains and the kernel's fault path."""
    from ..servers.crypt.server import crypt_server  # trusted: part of the TCB

    cfg = kernel.config
    boot_id = os.urandom(16)
    root = kernel.root.cspace
    slots = {}
    for name, contract in (("crypt", CRYPT), ("blockdev", BLOCKDEV), ("pager", PAGER)):
        slots[name] = root.insert_original(Endpoint(name, contract), Rights.ALL)
    grant = kernel._root_cap
    kernel.spawn(crypt_server, cfg.cipher, boot_id, name="crypt", kind="server",
                 caps={"service": Grant(grant(slots["crypt"]), Rights.READ)})
    blockdev = cfg.blockdev_server or _default_blockdev()
    pager = cfg.pager or _default_pager(cfg.policy)
    if cfg.isolation == "process" or isinstance(pager, str):  # child processes / remote
        from ..isolation.boot import isolate_servers

        pager, blockdev = isolate_servers(cfg, pager, blockdev)
    kernel.spawn(blockdev, cfg.blockdev, cfg.swap_blocks, cfg.blockdev_latency,
                 name="blockdev", kind="server",
                 caps={"service": Grant(grant(slots["blockdev"]), Rights.READ)})
    kernel.spawn(pager, cfg.policy, name="pager", kind="server",
                 caps={"service": Grant(grant(slots["pager"]), Rights.READ),
                       "blockdev": Grant(grant(slots["blockdev"]), Rights.WRITE)})
    # the kernel calls its servers through write-only capabilities: no operation of
    # theirs declares capabilities in its reply (Op.reply_caps), so a reply carrying
    # any is refused, counted as an attack, and can never fill the root CSpace
    calls = {name: root.lookup(root.insert_derived(root.lookup(slots[name]), Rights.WRITE, None))
             for name in ("pager", "crypt")}
    vm = VM(kernel, boot_id, calls["pager"], calls["crypt"])
    kernel.vm = vm
    kernel.start_soon(vm.run, name="capkern:fault-path")


def _default_pager(policy: str) -> Any:
    # The kernel only *starts* the default pager program as an untrusted domain; it
    # never calls into it except over its endpoint.  Imported lazily by name so the
    # TCB modules carry no import of untrusted server code.  The one thing it asks of
    # the module is at boot, before any domain runs: whether the boot option ``policy``
    # names one of its policies, so a typo is a ConfigError from boot() rather than a
    # pager that dies at start and processes that later run out of frames.
    import importlib

    module = importlib.import_module("capkern.servers.pager.server")
    if policy not in module.POLICIES:
        raise ConfigError(
            f"unknown replacement policy {policy!r}; the default pager offers "
            f"{', '.join(module.POLICIES)}"
        )
    return module.pager_server


def _default_blockdev() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.blockdev.server").blockdev_server
