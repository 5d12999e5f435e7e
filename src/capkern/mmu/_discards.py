"""What the pager is told, told as little as possible (sans-IO, trusted).

The pager must hear that a page is gone (to free its swap slot), and which pages were
referenced or dirtied (to run its policy) -- but not which pages belong together or in
what virtual-address order they lie.  Two tools:

* :func:`shuffled` -- lists that are sets (referenced, dirty, a discard batch) go out in
  an order drawn from the OS's CSPRNG (:mod:`secrets`), never in mapping or address
  order.
* :class:`DiscardPool` -- handles freed by ``munmap`` and process exit are not sent as
  one batch per call: they join one pool shared by every process and leave it in
  batches of exactly :data:`DISCARD_BATCH` handles drawn at random from the pool.  A
  smaller remainder waits until the next eviction (when the pager may need the swap
  slots) or until it has waited :data:`DISCARD_DELAY` seconds (so swap is reclaimed on an
  idle system), then leaves shuffled.  A batch therefore mixes the pages of every
  process that let pages go meanwhile; only when a single process did so in that
  window can the pager link its pages, and the exit is visible in the fault stream then
  anyway.

The pool keeps, with each handle, the event of the fault or eviction still working on
that page (if any): a discard is sent only after those ended, so the pager never hears
of a page after it was told to forget it.
"""

from __future__ import annotations

import os
import random
import secrets
import struct
from collections.abc import Callable, Container, Iterable
from operator import itemgetter
from typing import TypeVar

import trio

__all__ = ["DISCARD_BATCH", "DISCARD_DELAY", "DiscardPool", "Taken", "shuffled"]

DISCARD_BATCH = 32
DISCARD_DELAY = 0.05  # seconds a partial pool waits for company

_RNG = secrets.SystemRandom()
T = TypeVar("T")

#: a discard to send: the handles, and the busy events to wait for first
Batch = tuple[list[int], list[trio.Event]]


def shuffled(items: Iterable[T], rng: random.Random = _RNG) -> list[T]:
    """A new list of ``items`` in an order drawn from ``rng`` (the OS's CSPRNG, unless a
    seeded boot asked for reproducible runs)."""
    out = list(items)
    n = len(out)
    if n > 1 and isinstance(rng, random.SystemRandom):
        # SystemRandom.shuffle reads the OS's CSPRNG once per item (a system call each)
        # and loops in Python: one read of 64 bits per item here instead, and the items
        # sorted by those keys (a uniform permutation, ties aside: chance below
        # n**2 / 2**65, nothing a pager could see), all in C.
        keys = struct.unpack(f"<{n}Q", os.urandom(8 * n))
        return list(itemgetter(*sorted(range(n), key=keys.__getitem__))(out))
    rng.shuffle(out)
    return out


class DiscardPool:
    """Handles waiting to be discarded, pooled across processes.

    ``send`` is called with each batch that leaves the pool (by :meth:`add` when the
    pool holds a full batch, by :meth:`flush`, or by :meth:`run`'s timer)."""

    def __init__(self, send: Callable[[list[int], list[trio.Event]], None],
                 batch: int = DISCARD_BATCH, delay: float = DISCARD_DELAY,
                 rng: random.Random = _RNG) -> None:
        if batch < 1:
            raise ValueError("a discard batch holds at least one handle")
        self._send = send
        self._rng = rng
        self.batch = batch
        self.delay = delay
        self._pending: dict[int, trio.Event | None] = {}
        self._wake = trio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, handle: object) -> bool:
        return handle in self._pending

    def add(self, pages: Iterable[tuple[int, trio.Event | None]]) -> None:
        """Pool ``(handle, busy event or None)`` pairs; send every full batch."""
        for handle, busy in pages:
            self._pending[handle] = busy
        while len(self._pending) >= self.batch:
            self._emit(self._rng.sample(list(self._pending), self.batch))
        if self._pending:
            self._wake.set()

    def flush(self) -> None:
        """Send everything pending now (shuffled, in batches of at most ``batch``)."""
        order = shuffled(self._pending, self._rng)
        for i in range(0, len(order), self.batch):
            self._emit(order[i : i + self.batch])

    def _emit(self, handles: list[int]) -> None:
        after = [busy for h in handles if (busy := self._pending.pop(h)) is not None]
        self._send(handles, after)

    async def run(self) -> None:
        """Flush a partial pool once it has waited ``delay`` seconds (a kernel task)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self.delay)
            self.flush()


class Taken:
    """Handles a new page must not get: live ones and ones still waiting in the pool
    (the pager may still hold a copy under such a handle until the discard reaches it)."""

    __slots__ = ("_live", "_pool")

    def __init__(self, live: Container[int], pool: DiscardPool) -> None:
        self._live, self._pool = live, pool

    def __contains__(self, handle: object) -> bool:
        return handle in self._live or handle in self._pool
