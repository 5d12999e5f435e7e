"""Page replacement policies (sans-IO).  They live in the untrusted pager.

A policy sees opaque page handles and the reference/dirty bits the kernel harvests
from page tables at each eviction request -- never page contents.  Plug in your own by
subclassing :class:`ReplacementPolicy` and passing it to ``make_pager(policy=...)``.
A bad choice costs speed only: the kernel validates every victim.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import compress, filterfalse, islice
from operator import indexOf, not_

from ...errors import ConfigError
from ._alloc import LocalLRUPolicy, PFFPolicy, WorkingSetPolicy
from ._base import ReplacementPolicy, _OrderedPolicy
from ._exact import LFUPolicy, MRUPolicy, OPTPolicy

__all__ = ["POLICIES", "ClockPolicy", "FIFOPolicy", "LRUPolicy", "RandomPolicy",
           "ReplacementPolicy", "make_policy"]


class FIFOPolicy(_OrderedPolicy):
    """Evict in order of admission; references do not matter."""

    name = "fifo"


class LRUPolicy(_OrderedPolicy):
    """LRU: referenced pages move to the MRU end, in the order the kernel reports them;
    victims come from the LRU end.

    Exact on a precise boot (``boot(precise=True)``: every reference, in order).  On a
    normal boot the order is only as fine as the harvests: pages referenced between two
    evictions look equally recent (ordered by how the kernel listed them).
    """

    name = "lru"
    precise = True

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self._order:
                self._order.move_to_end(h)


class ClockPolicy(ReplacementPolicy):
    """Second chance: a hand sweeps the pages; a referenced page is skipped once.

    The ring is a plain dict (handle -> reference bit) whose first key is the page under
    the hand: advancing the hand past a page moves it to the end with its bit clear.  A
    new page enters just behind the hand with a clear bit, so it is the last one the
    hand reaches.  :meth:`choose` moves the hand and clears the bits it passes, as the
    real algorithm does.

    :meth:`choose` finds the victims in C (``itertools`` over the ring) and then moves
    the pages the hand passed, rather than popping and re-inserting each page of an
    ordered dict as the hand reaches it (measured: a 16-page choice that turns a ring of
    32 one and a half times cost 96k instructions, 46k now; one that stops after 16
    pages 29k, 24k now).  The batch calls (admit, referenced, remove) stay plain loops:
    for 16 handles, ``dict.fromkeys``/``update`` measured dearer.
    """

    name = "clock"

    def __init__(self) -> None:
        self._ref: dict[int, bool] = {}  # ring order; first key = under the hand

    def admit(self, handle: int) -> None:
        self._ref.setdefault(handle, False)

    def admit_many(self, handles: Iterable[int]) -> None:
        # admit() for each page, without a Python call per page: keep the two in step
        # (a subclass overriding admit() gets its own admit() called for every page)
        if type(self).admit is not ClockPolicy.admit:
            super().admit_many(handles)
            return
        setdefault = self._ref.setdefault
        for handle in handles:
            setdefault(handle, False)

    def remove(self, handle: int) -> None:
        self._ref.pop(handle, None)

    def remove_many(self, handles: Iterable[int]) -> None:
        # remove() for each page, without a Python call per page: keep the two in step
        # (and a subclass's own remove(), as admit_many does)
        if type(self).remove is not ClockPolicy.remove:
            super().remove_many(handles)
            return
        pop = self._ref.pop
        for handle in handles:
            pop(handle, None)

    def referenced(self, handles: Iterable[int]) -> None:
        ring = self._ref
        for h in handles:
            if h in ring:
                ring[h] = True

    def choose(self, n: int) -> list[int]:
        """Sweep the hand: clear set bits (second chance), take clear ones as victims.

        Each page the hand passes goes behind it with its bit clear (a victim's was
        clear already).  One turn of the ring takes every page whose bit was clear; if
        that is not enough, every bit is clear by then and a second turn takes the
        pages not taken yet, in hand order.
        """
        ring = self._ref
        want = min(n, len(ring))
        if want <= 0:
            return []
        # first turn: the first ``want`` pages whose bit is clear
        victims = list(islice(compress(ring, map(not_, ring.values())), want))
        if len(victims) == want:  # the hand stopped just past the last victim
            for h in list(islice(ring, indexOf(ring, victims[-1]) + 1)):
                del ring[h]
                ring[h] = False  # behind the hand, its bit clear
            return victims
        # a whole turn passed (the order is where it began, every bit clear); the
        # second turn takes pages not taken yet and stops just past the last of them
        keys = list(ring)
        taken = set(victims)
        victims += islice(filterfalse(taken.__contains__, keys), want - len(victims))
        stop = keys.index(victims[-1]) + 1
        self._ref = dict.fromkeys(keys[stop:] + keys[:stop], False)
        return victims

    def __contains__(self, handle: object) -> bool:
        return handle in self._ref

    def __len__(self) -> int:
        return len(self._ref)


class RandomPolicy(_OrderedPolicy):
    """Uniformly random victims (seeded: deterministic)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._rng = random.Random(seed)

    def choose(self, n: int) -> list[int]:
        """A seeded sample, drawn from the sorted handles so runs are reproducible."""
        pages = sorted(self._order)
        return self._rng.sample(pages, min(max(0, n), len(pages)))


POLICIES: dict[str, type[ReplacementPolicy]] = {
    p.name: p for p in (FIFOPolicy, ClockPolicy, LRUPolicy, RandomPolicy, LFUPolicy, MRUPolicy,
                        OPTPolicy, LocalLRUPolicy, WorkingSetPolicy, PFFPolicy)
}


def make_policy(name: str) -> ReplacementPolicy:
    """A fresh policy by name (``fifo``, ``clock``, ``lru``, ``random``, ``lfu``,
    ``mru``, ``opt``)."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown replacement policy {name!r}; choose from {', '.join(POLICIES)}"
        ) from None
