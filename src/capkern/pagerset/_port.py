"""A pager set behind the server-port seam (TRUSTED): N untrusted pagers as one.

:class:`PagerSetPort` is a :class:`~capkern.mmu._ports.ServerPort` that speaks the PAGER
contract to the fault path and fans each call out to N member pagers (each with its own
block device, each a domain of its own, in a child OS process or on a remote host when so
booted).  The fault path does not know it talks to a set.

Two modes:

* ``mirror`` (``copies=k``): every sealed page is stored on the ``k`` members that
  :class:`~.placement.Placement` names for its handle (rendezvous hashing over the
  members not quarantined).  The kernel keeps in trusted memory, per page, a 128-bit
  BLAKE2b digest of the sealed blob it stored and which members confirmed the store.
  A fetch asks the first holder; on a copy that does not match the digest, a typed
  error, a lost connection or a timeout it asks the next.  Hedging: after ``hedge``
  seconds without an answer the next holder is asked, and after each further ``hedge``
  of silence one more -- the silent first holder among them again (its first request
  is withdrawn: the common case, an answer within the delay, then costs no extra task).
  The page is lost only if every holder fails.
* ``erasure`` (``shards=n`` = the number of members, ``needed=m``): the sealed blob is
  split by :class:`~.erasure.ErasureCode` into ``n`` tagged shards, one per member (a
  rotation by handle); any ``m`` rebuild it.  A shard whose keyed tag fails names the
  member that corrupted it; another shard is fetched instead.  The tag's context is the
  page's handle and the generation of its store (trusted memory), so a replayed or
  swapped shard fails too.  Shards travel in the PAGER contract's sealed-page format:
  each is zero-padded to one sealed page, so on today's pager (one slot per sealed page)
  the *disk* overhead is ``n`` slots per page while the *code* overhead (the bytes that
  carry information) is ``n * (ceil(len / m) + 16) / len``; :meth:`PagerSetPort.overhead`
  reports both.

Either way the rebuilt or fetched blob then goes to the sealer exactly as a single
pager's would: unsealed, binding- and version-checked.  The digest and the tags only
tell the kernel *which member* lied, so it can ask another.

A member that fails an integrity check is **quarantined**: counted, reported (the
``on_quarantine`` callback: an event and the domain's row in ``ps()``), and never asked
again.  Typed errors, timeouts and dead channels are counted as failures (a member with
more failures is asked later) but do not quarantine: a crashed or slow pager is not a
liar.  A replacement joins with :meth:`PagerSetPort.rejoin`; it is refilled lazily:
the next store of each page goes to the members placement names *now*, so a page whose
copy the quarantined member held is re-stored on the replacement at its next eviction
(and a member that held the page before but is no longer named is told to forget it).

Eviction policy stays in the pagers: ``evict`` (and ``observe``) go to ONE member, the
primary; if it fails or is quarantined the next healthy member becomes primary (it then
learns the pages from later reports; until then the kernel's FIFO fallback applies).
The others only store, fetch and discard.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from .._pagefmt import SEALED_LEN
from ..errors import CapkernError, ConfigError, PagerUnavailable, ServerError
from ..mmu._ports import ServerPort
from ._erasure import ErasureCode
from ._members import Member, race
from ._placement import Placement, overhead_mirror

__all__ = ["MODES", "PagerSetPort", "pager_set"]

MODES = ("mirror", "erasure")
DIGEST_LEN = 16
T = TypeVar("T")
QuarantineHook = Callable[[int, str], None]


def _digest(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=DIGEST_LEN).digest()


class PagerSetPort:
    """N pager ports behind one PAGER port (see the module docstring)."""

    def __init__(self, members: Sequence[ServerPort], *, mode: str = "mirror",
                 copies: int = 2, needed: int | None = None, hedge: float = 0.05,
                 on_quarantine: QuarantineHook | None = None) -> None:
        n = len(members)
        if mode not in MODES:
            raise ConfigError(f"pager_set must be one of {MODES}, not {mode!r}")
        if n < 1:
            raise ConfigError("a pager set needs at least one pager")
        if not (type(hedge) in (int, float) and math.isfinite(hedge) and hedge > 0):
            raise ConfigError(f"hedge must be a positive number of seconds, not {hedge!r}")
        self.mode = mode
        self.members = [Member(i, p) for i, p in enumerate(members)]
        self.name = f"pager-set({mode}, {n})"
        self.hedge = float(hedge)
        self.on_quarantine = on_quarantine
        self.code: ErasureCode | None = None
        if mode == "mirror":
            self.placement = Placement(n, copies)
            self.copies = copies
        else:
            if type(needed) is not int or not 1 <= needed <= n:
                raise ConfigError(f"erasure needs 1 <= needed <= {n} pagers, got {needed!r}")
            self.placement = Placement(n, n)
            self.code = ErasureCode(n, needed, SEALED_LEN)
            self.copies = n
        self.primary = 0
        # trusted memory, per stored page: mirror -> (digest, holders);
        # erasure -> (generation, {shard index: member})
        self.digests: dict[int, bytes] = {}
        self.holders: dict[int, tuple[int, ...]] = {}
        self.gens: dict[int, int] = {}
        self.shards: dict[int, dict[int, int]] = {}
        self._gen = 0
        self.counts: Counter[str] = Counter()

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Mode, primary, per-member accounts and the set's counters (plain data)."""
        return {"mode": self.mode, "copies": self.copies,
                "needed": self.code.m if self.code else None, "primary": self.primary,
                "members": [m.as_dict() for m in self.members], **self.counts}

    def overhead(self) -> dict[str, float]:
        """Bytes stored per byte of sealed page: the code's, and on disk today."""
        if self.code is None:
            return {"code": overhead_mirror(self.copies), "disk": float(self.copies)}
        return {"code": self.code.overhead, "disk": float(self.code.n)}

    def quarantine(self, index: int, why: str) -> None:
        """Stop asking member ``index`` (it failed an integrity check)."""
        member = self.members[index]
        member.integrity += 1
        if member.quarantined:
            return
        member.quarantined = True
        self.placement.quarantine(index)
        self.counts["quarantines"] += 1
        if index == self.primary:
            self._next_primary()
        if self.on_quarantine is not None:
            self.on_quarantine(index, why)

    def rejoin(self, index: int, port: ServerPort | None = None) -> None:
        """A replacement pager takes member ``index``'s place (refilled lazily: each page
        is stored on it again at its next eviction).  Pages the old member held are
        forgotten for it, so it is never asked for them."""
        old = self.members[index]
        self.members[index] = Member(index, port if port is not None else old.port)
        self.placement.rejoin(index)
        for h, holders in list(self.holders.items()):
            if index in holders:
                self.holders[h] = tuple(i for i in holders if i != index)
        for where in self.shards.values():
            for shard, member in list(where.items()):
                if member == index:
                    del where[shard]
        self.counts["rejoins"] += 1

    def _next_primary(self) -> None:
        healthy = self.placement.healthy()
        if healthy:
            after = [i for i in healthy if i > self.primary]
            self.primary = (after or healthy)[0]
            self.counts["failovers"] += 1

    # -- calls ------------------------------------------------------------------------

    async def call(self, label: str, body: Any, deadline: float) -> Any:
        with trio.move_on_after(deadline):
            if label in ("evict", "observe"):
                return await self._primary_call(label, body, deadline)
            if label == "store":
                return await self._store(body["pages"], deadline)
            if label == "fetch":
                return {"blob": await self._fetch(body["handle"], deadline)}
            if label == "fetch_many":
                return {"blobs": await self._fetch_many(body["handles"], deadline)}
            if label == "discard":
                await self._discard(body["handles"], deadline)
                return None
            if label == "stats":
                return await self._stats(deadline)
            raise ServerError("bad_label", f"a pager set does not serve {label!r}")
        raise PagerUnavailable(f"{self.name} did not answer {label!r} within {deadline}s")

    async def _ask(self, index: int, label: str, body: Any, deadline: float) -> Any:
        member = self.members[index]
        try:
            reply = await member.port.call(label, body, deadline)
        except CapkernError:
            self._failed(index)
            raise
        member.streak = 0
        return reply

    def _failed(self, index: int) -> None:
        member = self.members[index]
        member.failures += 1
        member.streak += 1
        self.counts["member_failures"] += 1

    async def _primary_call(self, label: str, body: Any, deadline: float) -> Any:
        """The policy's calls: the primary, and on a failure the next healthy member
        (members that failed lately last).  Up to three are tried, each with its share
        of the deadline, so a silent primary leaves time for the next; the first that
        answers is the primary from then on."""
        last: CapkernError = PagerUnavailable(f"{self.name}: no healthy pager")
        healthy = self.placement.healthy()
        rotation = [i for i in healthy if i >= self.primary] + [i for i in healthy
                                                               if i < self.primary]
        order = sorted(rotation, key=lambda i: self.members[i].streak > 0)[:3]
        for index in order:
            share = deadline / len(order)
            try:
                with trio.fail_after(share):
                    reply = await self._ask(index, label, body, share)
            except trio.TooSlowError:
                last = PagerUnavailable(f"pager {index} did not answer {label!r}")
                self._failed(index)
            except CapkernError as exc:
                last = exc
            else:
                if index != self.primary:
                    self.primary = index
                    self.counts["failovers"] += 1
                return reply
        raise last

    async def _store(self, pages: list[Any], deadline: float) -> dict[str, Any]:
        code = self.code
        plan: dict[int, list[list[Any]]] = {}
        meta: dict[int, Any] = {}  # handle -> digest (mirror) or generation (erasure)
        for handle, blob in pages:
            if code is None:
                meta[handle] = _digest(blob)
                for index in self.placement.mirrors(handle):
                    plan.setdefault(index, []).append([handle, blob])
            else:
                self._gen += 1
                meta[handle] = self._gen
                shards = code.encode(blob, self._context(handle, self._gen))
                pad = bytes(SEALED_LEN - code.stored_len)
                for shard, index in enumerate(self.placement.shard_holders(handle)):
                    if not self.members[index].quarantined:
                        plan.setdefault(index, []).append([handle, shards[shard] + pad])
        want = 1 if code is None else code.m
        confirmed: dict[int, list[int]] = {h: [] for h in meta}  # handle -> members
        satisfied, all_done = trio.Event(), trio.Event()
        left = len(plan)

        async def one(index: int, items: list[list[Any]]) -> None:
            nonlocal left
            sent = {h for h, _ in items}
            try:
                reply = await self._ask(index, "store", {"pages": items}, deadline)
                for h in set(reply["stored"]) & sent:
                    confirmed[h].append(index)
            except CapkernError:
                pass
            finally:
                left -= 1
                if left == 0:
                    all_done.set()
                if all_done.is_set() or all(len(c) >= want for c in confirmed.values()):
                    satisfied.set()

        if plan:
            async with trio.open_nursery() as nursery:
                for index, items in plan.items():
                    nursery.start_soon(one, index, items)
                await satisfied.wait()
                with trio.move_on_after(self.hedge):  # a grace for the other copies
                    await all_done.wait()
                nursery.cancel_scope.cancel()
        stored = []
        stale: dict[int, list[int]] = {}  # members left with an old copy: told to forget
        for handle, members in confirmed.items():
            if len(members) < want:
                continue
            stored.append(handle)
            if code is None:
                old = set(self.holders.get(handle, ()))
                self.digests[handle] = meta[handle]
                self.holders[handle] = tuple(members)
            else:
                old = set(self.shards.get(handle, {}).values())
                holders = self.placement.shard_holders(handle)
                self.gens[handle] = meta[handle]
                self.shards[handle] = {s: i for s, i in enumerate(holders) if i in members}
            for index in old.difference(members):
                if not self.members[index].quarantined:
                    stale.setdefault(index, []).append(handle)
        if stale:  # best effort, for one hedge delay: a stale copy is refused anyway
            self.counts["stale_discards"] += sum(map(len, stale.values()))
            with trio.move_on_after(self.hedge):
                await self._send_discards(stale, deadline)
        if not stored and pages:
            raise ServerError("io", "no pager of the set stored the pages")
        return {"stored": stored}

    def _context(self, handle: int, gen: int) -> bytes:
        return handle.to_bytes(8, "big") + gen.to_bytes(8, "big")

    def _order(self, handle: int, holders: Sequence[int]) -> list[int]:
        """Holders to ask, best first: placement order, members that failed less first."""
        ranked = self.placement.fetch_order(handle, holders)
        return sorted(ranked, key=lambda i: self.members[i].streak > 0)

    async def _fetch(self, handle: int, deadline: float) -> bytes:
        reasons: list[str] = []

        async def attempt(index: int, label: str, body: Any) -> Any:
            try:
                return await self._ask(index, label, body, deadline)
            except ServerError as exc:
                reasons.append(exc.reason)
            except CapkernError:
                reasons.append("unavailable")
            return None

        code = self.code
        if code is None:
            digest = self.digests.get(handle)
            if digest is None:
                raise ServerError("not_found", "no such page in the pager set")

            async def copy(index: int) -> bytes | None:
                reply = await attempt(index, "fetch", {"handle": handle})
                if reply is None:
                    return None
                blob = reply["blob"]
                if _digest(blob) != digest:
                    reasons.append("integrity")
                    self.quarantine(index, f"returned a wrong copy of page {handle:#x}")
                    return None
                return bytes(blob)

            order = self._order(handle, self.holders[handle])
            if order:  # fast path: the first holder, on this task, for one hedge delay
                first = order.pop(0)
                blob: bytes | None = None
                with trio.move_on_after(self.hedge) as scope:
                    blob = await copy(first)
                if blob is not None:
                    return blob
                if scope.cancelled_caught:  # silent: the others, then it again
                    self.counts["hedges"] += 1
                    self.members[first].streak += 1
                    order.append(first)
            got = await self._race(order, 1, copy)
            if got:
                return got[0]
        else:
            where = self.shards.get(handle)
            if where is None:
                raise ServerError("not_found", "no such page in the pager set")
            context = self._context(handle, self.gens[handle])
            by_member = {i: s for s, i in where.items() if not self.members[i].quarantined}
            # data shards first: they rebuild the page without arithmetic
            order = sorted(by_member, key=lambda i: (self.members[i].streak > 0,
                                                     by_member[i] >= code.m))

            async def shard(index: int) -> tuple[int, bytes] | None:
                reply = await attempt(index, "fetch", {"handle": handle})
                if reply is None:
                    return None
                stored = reply["blob"][:code.stored_len]
                if not code.verify(by_member[index], stored, context):
                    reasons.append("integrity")
                    self.quarantine(index, f"returned a corrupt shard of page {handle:#x}")
                    return None
                return by_member[index], bytes(stored)

            shards = await self._race(order, code.m, shard)
            if len(shards) >= code.m:
                return code.decode(dict(shards), context).blob
        self.counts["pages_failed"] += 1
        if "integrity" in reasons:
            raise ServerError("integrity", "every copy of the page failed its check")
        if reasons and all(r == "not_found" for r in reasons):
            raise ServerError("not_found", "no pager of the set has the page")
        if "lost" in reasons or not reasons:
            raise ServerError("lost", "the page's copies died with their pagers")
        raise PagerUnavailable(f"{self.name}: no pager answered the fetch")

    async def _race(self, order: list[int], want: int,
                    attempt: Callable[[int], Awaitable[T | None]]) -> list[T]:
        return await race(self.members, order, want, attempt, self.hedge, self.counts)

    def _grace(self) -> float:
        """How long a ``fetch_many`` waits without progress for its last pages: time for
        every holder of a page to be asked (one more after each hedge), and one hedge."""
        return self.hedge * (len(self.members) + 1)

    async def _fetch_many(self, handles: list[int], deadline: float) -> list[bytes]:
        """Several pages (read-ahead, a burst's page-ins), each fetched as by ``fetch``,
        concurrently; b"" for a page that failed.

        Each page depends only on its own holders: once a page has been answered, a page
        still unanswered after :meth:`_grace` with no other answer coming meanwhile is
        cut (b"").  So members that are silent about some pages neither hold the others'
        answer for the whole deadline nor fail it; the kernel asks for a cut page again
        alone, for its own deadline and its own error.  If no page is answered at all,
        the call fails at its deadline as before."""
        blobs = [b""] * len(handles)
        send, recv = trio.open_memory_channel[int](len(handles))

        async def one(i: int, handle: int) -> None:
            try:
                blobs[i] = await self._fetch(handle, deadline)
            except CapkernError:
                pass
            send.send_nowait(i)

        async with trio.open_nursery() as nursery:
            for i, handle in enumerate(handles):
                nursery.start_soon(one, i, handle)
            await recv.receive()  # the first answer: bounded by the call's deadline
            left = len(handles) - 1
            while left:
                with trio.move_on_after(self._grace()):
                    await recv.receive()
                    left -= 1
                    continue
                self.counts["pages_cut"] += left  # silent about them: asked alone again
                nursery.cancel_scope.cancel()
                break
        return blobs

    async def _discard(self, handles: list[int], deadline: float) -> None:
        """Forget the pages: each holder is told (concurrently); errors only counted."""
        plan: dict[int, list[int]] = {}
        for handle in handles:
            if self.code is None:
                holders: Sequence[int] = self.holders.pop(handle, ())
                self.digests.pop(handle, None)
            else:
                holders = list(self.shards.pop(handle, {}).values())
                self.gens.pop(handle, None)
            for index in holders:
                if not self.members[index].quarantined:
                    plan.setdefault(index, []).append(handle)
        await self._send_discards(plan, deadline)

    async def _send_discards(self, plan: dict[int, list[int]], deadline: float) -> None:
        async def one(index: int, items: list[int]) -> None:
            try:
                await self._ask(index, "discard", {"handles": items}, deadline)
            except CapkernError:
                pass

        async with trio.open_nursery() as nursery:
            for index, items in plan.items():
                nursery.start_soon(one, index, items)

    async def _stats(self, deadline: float) -> dict[str, Any]:
        out: dict[str, Any] = {"pager_set": self.status()}
        try:
            primary = await self._ask(self.primary, "stats", {}, deadline / 2)
        except CapkernError as exc:
            primary = {"error": str(exc)}
        if isinstance(primary, dict):
            out.update({k: v for k, v in primary.items() if k != "pager_set"})
        return out


def pager_set(kernel: Any) -> PagerSetPort | None:
    """The pager set a booted kernel pages to (``boot(pagers=[...])``), or None."""
    vm = getattr(kernel, "vm", None)
    port = getattr(getattr(vm, "pager", None), "port", None)
    return port if isinstance(port, PagerSetPort) else None
