"""A library of malicious pagers and disks (UNTRUSTED by construction).

Every attacker is a real server speaking the real contract in the pager's (or the block
device's) place -- never a patch of kernel internals.  A pager attacker is an honest
:class:`~capkern.servers.pager.Pager` plus *tampers*: small objects that may take
over a reply (:meth:`Tamper.respond`) or transform a sealed page on its way back
(:meth:`Tamper.fetch`).  Tampers compose::

    attack_pager(Only(BitFlip("tag"), lambda n: n % 3 == 0), After(Replay(), 10))

Everything the attacker is given is recorded in an :class:`Evidence` object the test
owns, so a test can check that no plaintext ever reached the untrusted side and count
what was tried.  (The evidence object is the experimenter's instrument, outside the
mesh; the attacker uses only its own ``Process`` handle to act.)
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import trio

from .. import _insecure as insecure
from .. import _serverloop as serverloop
from .._pagefmt import NONCE_LEN, TAG_LEN
from .._proc import Process
from ..errors import CapkernError, ServerError
from ..isolation import ServerSpec
from ..servers.blockdev import BlockBackend, MemoryBackend, serve_backend
from ..servers.pager import Pager, make_policy

__all__ = [
    "After", "AttachCaps", "AttackPager", "BitFlip", "Crash", "DiskBitFlip", "DiskReplay",
    "Drop", "Evidence", "ExhaustDisk", "Extend", "Flood", "ForgeCaps", "Garbage", "Hang",
    "HoardQuota", "Misdirect", "Only", "Oversized", "PrevBoot", "PrevIncarnation", "Refuse",
    "Replay", "ReplayDiscarded", "ReuseReply", "RevokeRace", "Slow", "Snoop", "Sometimes",
    "Swap", "Tamper", "Truncate", "WrongLabel", "Zeros", "attack_disk", "attack_pager",
    "build_attack_disk", "build_attack_pager", "disk_attacker", "make_tamper", "tamper_spec",
]


def _walk_bytes(value: Any) -> Iterator[bytes]:
    """Every byte string in a decoded message body (strings as their UTF-8 bytes, so
    content smuggled out as text is looked at too)."""
    if isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value)
    elif isinstance(value, str):
        yield value.encode("utf-8", "surrogateescape")
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk_bytes(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_bytes(k)
            yield from _walk_bytes(v)


class Evidence:
    """What the untrusted side saw and tried; owned by the test."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []  # every byte string the attacker was handed
        self.tried: Counter[str] = Counter()  # attack name -> times tried
        self.breaches: list[str] = []  # anything confinement should have stopped
        self.refused: Counter[str] = Counter()  # error types the kernel answered with
        self.archive: dict[int, list[bytes]] = defaultdict(list)  # handle -> blobs, all boots
        self.since_boot = insecure.serial()  # boots after this one are this evidence's runs
        #: the metadata of every evict report, discard batch and fetch, in arrival
        #: order, as ``(label, body)`` -- what the pager could learn beyond contents
        self.metadata: list[tuple[str, Any]] = []

    def discard_batches(self) -> list[list[int]]:
        """Every discard batch the kernel sent, in order."""
        return [list(body["handles"]) for label, body in self.metadata if label == "discard"]

    def mapped_order(self) -> list[int]:
        """Handles in the order the kernel reported them mapped (first report wins)."""
        seen: dict[int, None] = {}
        for label, body in self.metadata:
            if label == "evict":
                for h in body["mapped"]:
                    seen.setdefault(h, None)
        return list(seen)

    def insecure_runs(self) -> list[str]:
        """Why a kernel that ran while this evidence was recording was insecure (e.g.
        the null cipher); empty if every such kernel was secure."""
        return insecure.insecure_since(self.since_boot)

    def record(self, value: Any) -> None:
        self.seen.extend(_walk_bytes(value))

    def saw_window_of(self, plaintexts: Iterable[bytes], window: int = 16) -> bool:
        """True if a plaintext window reached the attacker.

        Every ``window``-aligned, non-zero ``window``-byte slice of each plaintext is
        looked for at *every* offset of everything seen, so any leaked run of
        ``2 * window - 1`` or more plaintext bytes is caught wherever it lands.
        """
        wanted = {
            text[i : i + window]
            for text in plaintexts
            for i in range(0, len(text) - window + 1, window)
        }
        wanted = {w for w in wanted if w.strip(b"\x00")}
        for blob in self.seen:
            for i in range(len(blob) - window + 1):
                if blob[i : i + window] in wanted:
                    return True
        return False

    @property
    def bytes_seen(self) -> int:
        return sum(len(b) for b in self.seen)


class Tamper:
    """One attack behaviour.  Override :meth:`respond` and/or :meth:`fetch`.

    A tamper remembers the arguments it was made with, so that an attacking pager can
    be rebuilt by name in a child OS process (``boot(isolation="process")``): see
    :func:`tamper_spec`.
    """

    name = "tamper"
    _made_with: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        self._made_with = (args, kwargs)
        return self

    def active(self, pager: AttackPager, label: str) -> bool:
        return True

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        """Take over the reply to this request; True if it did."""
        return False

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        """Transform the sealed page being returned for ``handle``."""
        return blob


# -- composition ---------------------------------------------------------------------------


class _Wrap(Tamper):
    def __init__(self, inner: Tamper) -> None:
        self.inner = inner
        self.name = inner.name

    def _on(self, pager: AttackPager, label: str) -> bool:
        raise NotImplementedError

    def active(self, pager: AttackPager, label: str) -> bool:
        return self._on(pager, label) and self.inner.active(pager, label)

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        return await self.inner.respond(pager, label, body)

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return await self.inner.fetch(pager, handle, blob)


class Only(_Wrap):
    """Attack only requests whose sequence number satisfies ``pred`` (or given labels)."""

    def __init__(self, inner: Tamper, pred: Callable[[int], bool] | None = None,
                 labels: Iterable[str] | None = None) -> None:
        super().__init__(inner)
        self.pred = pred
        self.labels = set(labels) if labels is not None else None

    def _on(self, pager: AttackPager, label: str) -> bool:
        if self.labels is not None and label not in self.labels:
            return False
        return self.pred is None or self.pred(pager.requests)


class After(_Wrap):
    """Behave honestly for the first ``n`` requests, then attack."""

    def __init__(self, inner: Tamper, n: int) -> None:
        super().__init__(inner)
        self.n = n

    def _on(self, pager: AttackPager, label: str) -> bool:
        return pager.requests > self.n


class Sometimes(_Wrap):
    """Attack each request with probability ``p`` (seeded, deterministic).

    The decision is made once per request and is a pure function of ``(seed, request
    number)``: the reply phase and the fetch phase of one request agree, and the set of
    attacked requests does not depend on how often (or whether) other tampers consult
    it."""

    def __init__(self, inner: Tamper, p: float, seed: int = 0) -> None:
        super().__init__(inner)
        self.p = p
        self.seed = seed
        self._decided: tuple[int, bool] | None = None

    def chosen(self, request: int) -> bool:
        """Whether request number ``request`` is attacked."""
        if self._decided is None or self._decided[0] != request:
            draw = random.Random(f"capkern-sometimes:{self.seed}:{request}").random()
            self._decided = (request, draw < self.p)
        return self._decided[1]

    def _on(self, pager: AttackPager, label: str) -> bool:
        return self.chosen(pager.requests)


# -- sealed-page attacks ----------------------------------------------------------------------


class Snoop(Tamper):
    """Honest, but records everything (every pager here records into its evidence)."""

    name = "snoop"


class BitFlip(Tamper):
    """Flip one bit of the returned page in ``region``: nonce, ciphertext, tag or any."""

    name = "bitflip"

    REGIONS = ("nonce", "ciphertext", "tag", "any")

    def __init__(self, region: str = "any", seed: int = 0) -> None:
        if region not in self.REGIONS:
            raise ValueError(f"region must be one of {', '.join(self.REGIONS)}, not {region!r}")
        self.region = region
        self.rng = random.Random(seed)
        self.name = f"bitflip-{region}"

    def span(self, length: int) -> tuple[int, int]:
        """The byte range of ``region`` in a blob of ``length`` bytes: the nonce leads,
        the tag ends the blob (so a blob already shortened or lengthened by an earlier
        tamper still has a tag to flip)."""
        nonce_end = min(NONCE_LEN, length)
        tag_start = max(nonce_end, length - TAG_LEN)
        return {"nonce": (0, nonce_end), "ciphertext": (nonce_end, tag_start),
                "tag": (tag_start, length), "any": (0, length)}[self.region]

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        lo, hi = self.span(len(blob))
        if lo >= hi:  # no such region left in this blob: nothing to flip
            return blob
        pos = self.rng.randrange(lo, hi)
        out = bytearray(blob)
        out[pos] ^= 1 << self.rng.randrange(8)
        return bytes(out)


class Truncate(Tamper):
    name = "truncate"

    def __init__(self, nbytes: int = 1) -> None:
        self.nbytes = nbytes

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return blob[: -self.nbytes]


class Extend(Tamper):
    name = "extend"

    def __init__(self, extra: bytes = b"\x00") -> None:
        self.extra = extra

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return blob + self.extra


class Replay(Tamper):
    """Return the oldest earlier sealed version of the same page, if any."""

    name = "replay"

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        older = [b for b in pager.evidence.archive[handle] if b != blob]
        return older[0] if older else blob


class Swap(Tamper):
    """Return the sealed page of another handle (same or another process)."""

    name = "swap"

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        others = [h for h in pager.current if h != handle]
        return pager.current[others[-1]] if others else blob


class Misdirect(Tamper):
    """Answer each fetch with the page of the *previous* fetch request."""

    name = "misdirect"

    def __init__(self) -> None:
        self.last: bytes | None = None

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        prev, self.last = self.last, blob
        return prev if prev is not None and prev != blob else blob


class PrevIncarnation(Tamper):
    """Return a page of a process that has exited (its handles were discarded)."""

    name = "prev-incarnation"

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return pager.discarded[-1] if pager.discarded else blob


class ReplayDiscarded(Tamper):
    """Keep the sealed copy of every page the kernel said to discard, and hand one back
    for a *live* page -- the page mapped again at the same address after ``munmap``, or
    a respawned process's page.

    ``pick``: ``"newest"`` (the most recently discarded copy), ``"oldest"``, or
    ``"cycle"`` (each fetch the next copy, so repeated fetches try them all).
    ``target``: ``"new"`` attacks only pages first stored after a discard (the likely
    reincarnations of a discarded place: the sharpest form of the attack), ``"all"``
    every fetch."""

    name = "replay-discarded"

    def __init__(self, pick: str = "newest", target: str = "new") -> None:
        if pick not in ("newest", "oldest", "cycle"):
            raise ValueError(f"pick must be newest, oldest or cycle, not {pick!r}")
        if target not in ("new", "all"):
            raise ValueError(f"target must be new or all, not {target!r}")
        self.pick, self.target = pick, target
        self.turn = 0
        self.first_discard: int | None = None
        self.born: dict[int, int] = {}  # handle -> request number of its first store

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label == "discard" and self.first_discard is None:
            self.first_discard = pager.requests
        elif label == "store":
            for handle, _blob in body["pages"]:
                self.born.setdefault(handle, pager.requests)
        return False

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        kept = pager.discarded
        if not kept:
            return blob
        if self.target == "new" and (self.first_discard is None
                                     or self.born.get(handle, 0) < self.first_discard):
            return blob
        if self.pick == "newest":
            return kept[-1]
        if self.pick == "oldest":
            return kept[0]
        self.turn += 1
        return kept[(self.turn - 1) % len(kept)]


class PrevBoot(Tamper):
    """Return a page recorded in an earlier boot (share one Evidence across boots)."""

    name = "prev-boot"

    def __init__(self, old_blobs: list[bytes]) -> None:
        self.old = list(old_blobs)

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return self.old[handle % len(self.old)] if self.old else blob


class Zeros(Tamper):
    name = "zeros"

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        return bytes(len(blob))


class Refuse(Tamper):
    """Fail every ``label`` request with the contract's typed error ``reason``."""

    name = "refuse"

    def __init__(self, label: str, reason: str, detail: str = "") -> None:
        self.label, self.reason, self.detail = label, reason, detail

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label != self.label:
            return False
        try:
            pager.proc.reply_error(self.reason, self.detail)
        except CapkernError as exc:  # e.g. a reason the contract does not declare
            pager.evidence.refused[type(exc).__name__] += 1
        return True


class Drop(Refuse):
    """Claim the page does not exist."""

    name = "drop"

    def __init__(self) -> None:
        super().__init__("fetch", "not_found", "what page?")


# -- protocol attacks --------------------------------------------------------------------------


class Hang(Tamper):
    """Never answer (``labels``: which requests; default fetch)."""

    name = "hang"

    def __init__(self, labels: Iterable[str] = ("fetch",)) -> None:
        self.labels = set(labels)

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label not in self.labels:
            return False
        pager.evidence.tried[self.name] += 1
        await trio.sleep_forever()
        return True


class Crash(Tamper):
    """Die in the middle of a call."""

    name = "crash"

    def __init__(self, labels: Iterable[str] = ("fetch",)) -> None:
        self.labels = set(labels)

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label in self.labels:
            pager.evidence.tried[self.name] += 1
            raise RuntimeError("pager crashed mid-call")
        return False


class Slow(Tamper):
    """Answer honestly, late."""

    name = "slow"

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        pager.evidence.tried[self.name] += 1  # it answers honestly: count the delay here
        await trio.sleep(self.delay)
        return False


class Garbage(Tamper):
    """Reply with bytes that are not msgpack."""

    name = "garbage"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        try:
            pager.proc.reply_raw("ok", b"\xc1\xc1\xff\x00garbage")
        except CapkernError as exc:
            pager.evidence.refused[type(exc).__name__] += 1
        return True


class Oversized(Tamper):
    """Reply with a body larger than the kernel's message limit."""

    name = "oversized"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        try:
            pager.proc.reply("ok", {"blob": b"\x00" * (2 << 20)})
        except CapkernError as exc:
            pager.evidence.refused[type(exc).__name__] += 1
        return True


class WrongLabel(Tamper):
    """Reply with a label the contract does not allow."""

    name = "wrong-label"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        try:
            pager.proc.reply("surprise", {"victims": []})
        except CapkernError as exc:
            pager.evidence.refused[type(exc).__name__] += 1
        return True


class ReuseReply(Tamper):
    """Answer honestly, then try to use the one-shot reply capability again."""

    name = "reuse-reply"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        await pager.honest(label, body)
        for _ in range(3):
            try:
                pager.proc.reply("ok", None)
                pager.evidence.breaches.append("a used reply capability answered again")
            except CapkernError as exc:
                pager.evidence.refused[type(exc).__name__] += 1
        return True


class ForgeCaps(Tamper):
    """Guess slot numbers and abuse the capabilities it has, then answer honestly."""

    name = "forge-caps"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        proc, ev = pager.proc, pager.evidence
        own = {c.slot for c in proc.caps()}
        for slot in [0, -1, 2**40, *range(1, 64)]:
            if slot in own:
                continue
            try:
                await proc.call(slot, "fetch", {"handle": 1})
                ev.breaches.append(f"forged slot {slot} reached an object")
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
        # rights never grow: neither the write-only block device cap nor a copy of it
        # asking for more rights can receive.  A recv the kernel accepts is a breach even
        # if nothing arrives before the timeout: only a refusal is the right answer.
        targets: list[int | str] = ["blockdev"]
        try:
            targets.append(proc.copy("blockdev", "rwg"))
        except CapkernError as exc:
            ev.refused[type(exc).__name__] += 1
        for target in targets:
            try:
                with trio.move_on_after(0.01):
                    await proc.recv(target)
                ev.breaches.append(f"recv on a write-only capability ({target!r}) was accepted")
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
        await pager.honest(label, body)
        return True


class Flood(Tamper):
    """Hammer the kernel with unsolicited replies and junk calls, then answer honestly."""

    name = "flood"

    def __init__(self, count: int = 200) -> None:
        self.count = count

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        proc, ev = pager.proc, pager.evidence
        caller = proc.save_caller()
        for _ in range(self.count):
            try:
                proc.reply("ok", {"victims": []})  # no caller: refused
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
            try:
                proc.nbsend("service", "fetch", {"handle": 1})  # read-only cap: refused
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
            try:
                await proc.call("blockdev", "junk", [1, 2, 3])
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
        reply = await pager.compute(label, body)
        proc.reply_to(caller, *reply)
        return True


class AttachCaps(Tamper):
    """Attach capabilities to every reply (its own notifications and copies of the caps it
    holds), hoping they land in the kernel's root CSpace until it is full; then answer
    honestly.  The kernel must refuse each such reply -- the kernel's calls carry no
    grant right and no pager operation declares reply capabilities -- without using up
    the reply capability, so the honest answer still gets through."""

    name = "attach-caps"

    def __init__(self, count: int = 3) -> None:
        self.count = count
        self.gifts: list[int] = []

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        proc, ev = pager.proc, pager.evidence
        try:
            while len(self.gifts) < self.count:
                self.gifts.append(proc.new_notification())
            reply_label, reply = await pager.compute(label, body)
            proc.reply(reply_label, reply, caps=[*self.gifts, "service", "blockdev"])
            ev.breaches.append(f"the kernel accepted {self.count + 2} unsolicited capabilities")
            return True
        except CapkernError as exc:
            ev.refused[type(exc).__name__] += 1
        await pager.honest(label, body)  # the refused reply did not cost the caller
        return True


class HoardQuota(Tamper):
    """Once: create kernel objects and fill CSpace slots until the kernel says no, and
    block sends until it says no, then give it all back and answer honestly.  Anything
    but :class:`~capkern.errors.QuotaExceeded` (or a full CSpace) stopping it, or more
    than its quota being handed out, is a breach."""

    name = "hoard-quota"

    def __init__(self, limit: int = 1 << 14) -> None:
        self.limit = limit  # a bound far beyond any default quota: reaching it is a breach
        self.done = False

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if self.done:
            return False
        self.done = True
        proc, ev = pager.proc, pager.evidence
        made: list[int] = []
        def copy() -> int:
            return proc.copy("service", "r")

        makers: list[Callable[[], int]] = [proc.new_endpoint, copy]
        for make in makers:
            try:
                for _ in range(self.limit):
                    made.append(make())
                ev.breaches.append(f"{self.limit} objects/slots created without a quota")
            except CapkernError as exc:
                ev.refused[type(exc).__name__] += 1
        for slot in made:
            proc.delete(slot)
        if made:
            await self._queue(proc, ev)
        await pager.honest(label, body)
        return True

    async def _queue(self, proc: Process, ev: Evidence) -> None:
        """Block sends on an endpoint nobody receives on, until the quota refuses one."""
        ep = proc.new_endpoint()
        refused: list[str] = []

        async def sender() -> None:
            try:
                await proc.send(ep, "hoard")
            except CapkernError as exc:
                refused.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            for _ in range(self.limit):
                nursery.start_soon(sender)
                await trio.sleep(0)
                if refused:
                    break
            else:
                ev.breaches.append(f"{self.limit} sends blocked without a quota")
            proc.delete(ep)  # cancels every blocked send (CapabilityRevoked)
        ev.refused.update(refused)


class RevokeRace(Tamper):
    """Check that revoke means revoke from the untrusted side: block a send with a badge
    on its own endpoint, revoke that capability, then receive.  A message delivered
    after its capability was revoked (or a send that was not cancelled) is a breach."""

    name = "revoke-race"

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        proc, ev = pager.proc, pager.evidence
        ep = proc.new_endpoint()
        badged = proc.mint(ep, "w", 7)
        outcome: list[str] = []

        async def sender() -> None:
            try:
                await proc.send(badged, "stale", None)
                outcome.append("delivered")
            except CapkernError as exc:
                outcome.append(type(exc).__name__)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                for _ in range(3):
                    await trio.sleep(0)  # the sender blocks in send
                await proc.revoke(ep)
                with trio.move_on_after(0.001):
                    msg = await proc.recv(ep)
                    ev.breaches.append(f"a message with revoked badge {msg.badge} arrived")
            # CapabilityRevoked: the blocked send was cancelled by the revoke.  EmptySlot:
            # the revoke reached the kernel first (a pager in a child process relays its
            # syscalls, so their order there is not the order it issued them) -- the send
            # was refused, also no delivery.  Anything else is a breach.
            if outcome in (["CapabilityRevoked"], ["EmptySlot"]):
                ev.refused[outcome[0]] += 1
            else:
                ev.breaches.append(f"a send through a revoked capability ended {outcome}")
        finally:
            proc.delete(ep)
        await pager.honest(label, body)
        return True


class ExhaustDisk(Refuse):
    """Claim the disk is full for every store."""

    name = "exhaust-disk"

    def __init__(self) -> None:
        super().__init__("store", "no_space", "disk full")


# -- the attacking pager ---------------------------------------------------------------------


class AttackPager(Pager):
    """An honest pager with tampers applied, recording everything it is handed."""

    def __init__(self, proc: Process, policy_name: str, tampers: list[Tamper],
                 evidence: Evidence) -> None:
        super().__init__(proc, make_policy(policy_name))
        self.tampers = tampers
        self.evidence = evidence
        self.requests = 0
        self.current: dict[int, bytes] = {}  # handle -> newest blob stored
        self.discarded: list[bytes] = []

    def handlers(self) -> serverloop.Table:
        """Every request goes through :meth:`attacked` before the honest handler."""
        return serverloop.around(super().handlers(), self.attacked)

    async def attacked(self, label: str, handler: serverloop.Handler, body: Any) -> Any:
        """Record the request, let a tamper take over its reply, or answer honestly
        with the fetched page passed through the tampers."""
        self.requests += 1
        self.evidence.record(body)
        if label in ("evict", "discard", "fetch"):
            self.evidence.metadata.append((label, body))
        if label == "store":
            for handle, blob in body["pages"]:
                self.current[handle] = blob
                self.evidence.archive[handle].append(blob)
        elif label == "discard":
            for handle in body["handles"]:
                if handle in self.current:
                    self.discarded.append(self.current.pop(handle))
        for tamper in self.tampers:
            if tamper.active(self, label) and await tamper.respond(self, label, body):
                self.evidence.tried[tamper.name] += 1
                return serverloop.DEFERRED
        return await self.tampered(label, await handler(body), body)

    async def tampered(self, label: str, reply: Any, body: Any) -> Any:
        """The honest ``reply`` to a request as the tampers change it."""
        if label == "fetch":
            blob = reply["blob"]
            for tamper in self.tampers:
                if tamper.active(self, label):
                    new = await tamper.fetch(self, body["handle"], blob)
                    if new != blob:
                        self.evidence.tried[tamper.name] += 1
                    blob = new
            reply = {"blob": blob}
        elif label == "fetch_many":  # read-ahead: every page of the cluster is tampered
            blobs = list(reply["blobs"])
            for i, handle in enumerate(body["handles"]):
                for tamper in self.tampers:
                    if blobs[i] and tamper.active(self, "fetch"):
                        new = await tamper.fetch(self, handle, blobs[i])
                        if new != blobs[i]:
                            self.evidence.tried[tamper.name] += 1
                        blobs[i] = new
            reply = {"blobs": blobs}
        return reply

    def reply_refused(self, exc: CapkernError) -> None:
        self.evidence.refused[type(exc).__name__] += 1

    async def compute(self, label: str, body: Any) -> tuple[str, Any]:
        """The (possibly tampered) reply to a request, without sending it."""
        try:
            reply = await Pager.handlers(self)[label](body)
        except ServerError as exc:
            return "error", {"reason": exc.reason, "detail": exc.detail}
        return "ok", await self.tampered(label, reply, body)

    async def honest(self, label: str, body: Any) -> None:
        reply_label, reply = await self.compute(label, body)
        try:
            self.proc.reply(reply_label, reply)
        except CapkernError as exc:
            self.reply_refused(exc)


def attack_pager(*tampers: Tamper, evidence: Evidence | None = None) -> Any:
    """A pager program with ``tampers`` in place; pass it as ``boot(pager=...)``.

    The returned program carries its evidence as ``.evidence``, and (when every tamper
    was made from plain data) a ``capkern_spec`` naming it for a child OS process.
    """
    ev = evidence if evidence is not None else Evidence()

    async def attacking_pager(proc: Process, policy_name: str = "clock") -> None:
        await AttackPager(proc, policy_name, list(tampers), ev).serve()

    attacking_pager.evidence = ev  # type: ignore[attr-defined]
    try:
        specs = [tamper_spec(t) for t in tampers]
    except ValueError as exc:
        attacking_pager.capkern_spec_error = str(exc)  # type: ignore[attr-defined]
    else:
        attacking_pager.capkern_spec = ServerSpec(  # type: ignore[attr-defined]
            "capkern.testing._attackers:build_attack_pager", (specs,), evidence=ev)
    return attacking_pager


_PLAIN = (type(None), bool, int, float, str, bytes)


def _spec_value(value: Any, where: str) -> Any:
    if isinstance(value, Tamper):
        return {"tamper": tamper_spec(value)}
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_spec_value(v, where) for v in value]
    raise ValueError(f"{where}: {value!r} is not plain data, so this tamper cannot be "
                     "rebuilt in a child process")


def tamper_spec(tamper: Tamper) -> list[Any]:
    """``[class name, args, kwargs]`` rebuilding ``tamper`` in another process (a
    ValueError for one made with a function, e.g. ``Only(t, pred=lambda n: ...)``).
    Only the kit's own tampers can be named this way."""
    cls = type(tamper)
    if cls.__module__ != __name__ or globals().get(cls.__name__) is not cls:
        raise ValueError(f"{cls.__qualname__} is not a tamper of the kit")
    args, kwargs = tamper._made_with
    where = f"{cls.__name__}(...)"
    return [cls.__name__, [_spec_value(a, where) for a in args],
            {k: _spec_value(v, where) for k, v in kwargs.items()}]


def _from_spec(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"tamper"}:
        return make_tamper(value["tamper"])
    if isinstance(value, list):
        return [_from_spec(v) for v in value]
    return value


def make_tamper(spec: list[Any]) -> Tamper:
    """The tamper a :func:`tamper_spec` names."""
    name, args, kwargs = spec
    cls = globals().get(name) if name in __all__ else None
    if not (isinstance(cls, type) and issubclass(cls, Tamper)):
        raise ValueError(f"no tamper named {name!r}")
    tamper: Tamper = cls(*[_from_spec(a) for a in args],
                         **{k: _from_spec(v) for k, v in kwargs.items()})
    return tamper


class _ReportingPager(AttackPager):
    """An attack pager in a child process: its evidence counters go to the test through
    the proxy (what it is *handed* is recorded by the proxy itself, on the kernel side)."""

    def handlers(self) -> serverloop.Table:
        async def reporting(label: str, handler: serverloop.Handler, body: Any) -> Any:
            try:
                return await handler(body)
            finally:
                note = getattr(self.proc, "note", None)
                if note is not None:
                    ev = self.evidence
                    note({"tried": dict(ev.tried), "refused": dict(ev.refused),
                          "breaches": list(ev.breaches)})

        return serverloop.around(super().handlers(), reporting)


def build_attack_pager(specs: list[Any], evidence: Evidence | None = None) -> Any:
    """The attacking pager program named by tamper specs (run in a child process)."""
    tampers = [make_tamper(s) for s in specs]
    ev = evidence if evidence is not None else Evidence()

    async def attacking_pager(proc: Any, policy_name: str = "clock") -> None:
        await _ReportingPager(proc, policy_name, tampers, ev).serve()

    return attacking_pager


# -- malicious disks ---------------------------------------------------------------------------


class DiskBitFlip(MemoryBackend):
    """A disk that flips one bit in every ``every``-th block read (and records writes)."""

    def __init__(self, nblocks: int, evidence: Evidence, every: int = 1, seed: int = 0) -> None:
        super().__init__(nblocks)
        self.evidence = evidence
        self.every = every
        self.rng = random.Random(seed)

    def write(self, lba: int, data: bytes) -> None:
        self.evidence.record(data)
        super().write(lba, data)

    def read(self, lba: int) -> bytes:
        data = super().read(lba)
        if self.reads % self.every == 0 and any(data):
            out = bytearray(data)
            out[self.rng.randrange(len(out))] ^= 1 << self.rng.randrange(8)
            self.evidence.tried["disk-bitflip"] += 1
            return bytes(out)
        return data


class DiskReplay(MemoryBackend):
    """A disk that returns the first contents ever written to a block."""

    def __init__(self, nblocks: int, evidence: Evidence) -> None:
        super().__init__(nblocks)
        self.evidence = evidence
        self.first: dict[int, bytes] = {}

    def write(self, lba: int, data: bytes) -> None:
        self.evidence.record(data)
        self.first.setdefault(lba, bytes(data))
        super().write(lba, data)

    def read(self, lba: int) -> bytes:
        data = super().read(lba)
        old = self.first.get(lba)
        if old is not None and old != data:
            self.evidence.tried["disk-replay"] += 1
            return old
        return data


def attack_disk(factory: Callable[[int], BlockBackend]) -> Any:
    """A block device program serving the backend ``factory(nblocks)`` makes."""

    async def malicious_disk(proc: Process, spec: str, nblocks: int, latency: float = 0.0) -> None:
        await serve_backend(proc, factory(nblocks), latency)

    return malicious_disk


_DISKS: dict[str, type[MemoryBackend]] = {"DiskBitFlip": DiskBitFlip, "DiskReplay": DiskReplay}


def disk_attacker(name: str, evidence: Evidence | None = None, **kwargs: Any) -> ServerSpec:
    """A malicious disk named by its class (``DiskBitFlip``/``DiskReplay``) and plain
    keyword arguments: runs in either isolation mode (``boot(blockdev_server=...)``)."""
    if name not in _DISKS:
        raise ValueError(f"no malicious disk named {name!r}; one of {', '.join(_DISKS)}")
    return ServerSpec("capkern.testing._attackers:build_attack_disk", (name, kwargs),
                      evidence=evidence)


def build_attack_disk(name: str, kwargs: dict[str, Any],
                      evidence: Evidence | None = None) -> Any:
    """The malicious disk program :func:`disk_attacker` names."""
    cls = _DISKS[name]
    ev = evidence if evidence is not None else Evidence()

    async def malicious_disk(proc: Any, spec: str, nblocks: int, latency: float = 0.0) -> None:
        backend = cls(nblocks, ev, **kwargs)  # type: ignore[arg-type]
        await serve_backend(proc, backend, latency)

    return malicious_disk
