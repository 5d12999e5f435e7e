"""Moving pages across the server ports: seal + store, fetch + unseal (trusted).

The fault path decides *which* pages move and keeps them busy; this module moves them,
each batch in one round trip to the sealer and one to the pager, whatever its size:

* :meth:`PageIO.seal_and_store` gives each page the next value of the boot-wide version
  counter (in trusted memory, :mod:`.binding`), has the sealer seal the batch bound to
  (asid, incarnation, vpn, version) and hands the sealed pages to the pager; it returns
  the handles the pager confirmed (a claim to have stored a handle not in the batch is
  ignored).  A binding that cannot be encoded fails its own page only.
* :meth:`PageIO.fetch` fetches a page, or a cluster (the faulting page first, then
  read-ahead neighbours), with one ``fetch`` or ``fetch_many`` and unseals it in one call, checking
  each against the binding and the version of its current sealed copy.  A copy that is
  missing or refused is ``None``: never wrong data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .._pagefmt import PAGE_SIZE
from ..errors import Fault, PageInError, PageLost, PagerUnavailable, ServerError
from ._aspace import PTE, AddressSpace
from ._binding import Versions
from ._frames import FrameTable
from ._ports import PagerLink, ServerPort

if TYPE_CHECKING:
    from .._trace import Counters

__all__ = ["MISSING", "Discard", "PageIO", "Victim"]

#: an eviction victim: (handle, address space, virtual page, page-table entry)
Victim = tuple[int, AddressSpace, int, PTE]
#: a page to bring in: (address space, virtual page, page-table entry)
Wanted = tuple[AddressSpace, int, PTE]


class _Missing:
    """A page the pager had no copy of (``fetch_many`` answered b"" for it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass
class Discard:
    """Pages the pager must forget, once the busy pages among them have settled."""

    handles: list[int]
    after: list[trio.Event] = field(default_factory=list)


class PageIO:
    """Sealed page transfers through the pager and sealer ports."""

    def __init__(self, pager: PagerLink, crypt: ServerPort, crypt_deadline: float,
                 stats: Counters, frames: FrameTable,
                 event: Callable[[str, str], None]) -> None:
        self.pager = pager
        self.crypt = crypt
        self.crypt_deadline = crypt_deadline
        self.stats = stats
        self.frames = frames
        self.event = event  # (kind, detail): the kernel's own events
        self.store_error = ""  # why the last store failed, for OutOfMemory's message
        self.versions = Versions()  # one boot-wide counter: no binding ever repeats

    async def seal_and_store(self, pages: list[Victim]) -> set[int]:
        pages, bindings, errors = self.versions.seal_batch(pages)
        for error in errors:  # those pages stay resident; the rest of the batch goes on
            self.event("internal_error", error)
        if not pages:
            return set()
        view = self.frames.view
        items = [[b, bytes(view[(s := v[3].frame * PAGE_SIZE) : s + PAGE_SIZE])]
                 for v, b in zip(pages, bindings, strict=True)]
        sealed = await self.crypt.call("seal", {"pages": items}, self.crypt_deadline)
        blobs = sealed["blobs"]
        if len(blobs) != len(items):
            raise Fault("sealer returned the wrong number of pages")
        self.stats.seals += len(blobs)
        body = {"pages": [[v[0], blob] for v, blob in zip(pages, blobs, strict=True)]}
        try:
            reply = await self.pager.call("store", body)
        except (Fault, ServerError) as exc:
            self.event("pager_error", f"store: {exc}")
            self.store_error = f"pager: {exc}"
            return set()
        stored = set(reply["stored"]) & {v[0] for v in pages}  # only what was sent
        self.store_error = "" if stored else "the pager stored none of them"
        for h, _aspace, _vpn, pte in pages:
            if h in stored:
                pte.sealed_version = pte.version
                pte.dirty = False
        return stored

    async def fetch(self, aspace: AddressSpace, vpn: int, pte: PTE,
                    cluster: Sequence[tuple[int, PTE, int]] = ()) -> list[bytes | None]:
        """The verified plaintext of page ``vpn`` and of its read-ahead ``cluster`` (in
        that order), None for each copy missing or refused.  A pager error on the page
        itself is :class:`PageInError`.  One page alone, the common case, builds no list
        of pages, iterators or index lists (measured: the objects a fault allocates are
        a large part of its instructions)."""
        if cluster:
            return await self._fetch_many(
                [(aspace, vpn, pte)] + [(aspace, v, p) for v, p, _f in cluster])
        try:
            blob = (await self.pager.call("fetch", {"handle": pte.handle}))["blob"]
        except ServerError as exc:
            raise self._refused(exc.reason, exc.detail) from None
        if not blob:
            raise self._refused("not_found", "the pager has no copy of the page")
        version = pte.sealed_version  # the binding its copy was sealed under: checked then
        items = [] if version is None else [
            [[aspace.asid, aspace.incarnation, vpn, version], blob]]
        result = await self.crypt.call("unseal", {"pages": items}, self.crypt_deadline)
        plain, ok = result["plain"], result["ok"]
        self.stats.unseals += len(items)  # _check_unsealed, inlined: every fault
        if len(ok) != len(items) or len(plain) != len(items):
            raise Fault("sealer returned the wrong number of pages")
        return [plain[0] if items and ok[0] else None]

    async def _fetch_many(self, pages: list[Wanted]) -> list[bytes | None]:
        """:meth:`fetch` of a read-ahead cluster: one ``fetch_many``, one ``unseal``.  A
        faulting page the pager answers b"" for is fetched again alone, so its error is
        exactly a lone fetch's (as a burst's page is, :mod:`.pageins`)."""
        aspace, vpn, pte = pages[0]
        try:
            out = await self.fetch_each(pages)
        except ServerError as exc:
            raise self._refused(exc.reason, exc.detail) from None
        if out[0] is MISSING:  # fetched again alone, for its own exact error (a pager
            out[0] = (await self.fetch(aspace, vpn, pte))[0]  # set cuts a page it is slow on)
        return [None if p is MISSING else p for p in out]  # type: ignore[misc]

    async def fetch_each(self, pages: list[Wanted]) -> list[bytes | _Missing | None]:
        """Pages of any address spaces in one ``fetch_many`` and one ``unseal``: each
        page's verified plaintext, None if the sealer refused it, :data:`MISSING` if the
        pager had no copy.  A pager or sealer error fails the whole trip."""
        handles = [pte.handle for _a, _v, pte in pages]
        blobs = (await self.pager.call("fetch_many", {"handles": handles}))["blobs"]
        if len(blobs) != len(pages):
            self.stats.pager_protocol_errors += 1
            raise PagerUnavailable("pager answered fetch_many with the wrong count")
        out: list[bytes | _Missing | None] = [MISSING] * len(pages)
        items, where = [], []
        for i, ((aspace, vpn, pte), blob) in enumerate(zip(pages, blobs, strict=True)):
            if not blob:
                continue
            out[i] = None
            if pte.sealed_version is not None:
                items.append([[aspace.asid, aspace.incarnation, vpn, pte.sealed_version],
                              blob])
                where.append(i)
        if not items:
            return out
        result = await self.crypt.call("unseal", {"pages": items}, self.crypt_deadline)
        self._check_unsealed(items, result)
        for i, ok, plain in zip(where, result["ok"], result["plain"], strict=True):
            if ok:
                out[i] = plain
        return out

    def _check_unsealed(self, items: list[Any], result: Any) -> None:
        self.stats.unseals += len(items)
        if len(result["ok"]) != len(items) or len(result["plain"]) != len(items):
            raise Fault("sealer returned the wrong number of pages")

    def _refused(self, reason: str, detail: str) -> PageInError:
        """A page-in the pager refused (``lost``: the page's only sealed copy died with
        its pager's OS process), counted."""
        self.stats.page_in_errors += 1
        return (PageLost if reason == "lost" else PageInError)(reason, detail)

    async def discard(self, item: Discard) -> None:
        """Tell the pager to forget pages (after their last store, never before)."""
        for busy in item.after:
            await busy.wait()
        try:
            await self.pager.call("discard", {"handles": item.handles})
        except (Fault, ServerError) as exc:
            self.event("pager_error", f"discard: {exc}")
