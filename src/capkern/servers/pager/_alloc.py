"""Frame allocation across processes: local vs global replacement, working set and
page-fault frequency (sans-IO; UNTRUSTED, in the pager).

On a precise boot the kernel tells the pager which address space each page belongs to
(an opaque *space tag*, no pid or address) and which space a fault is for, and reports
every reference in order.  With that, a pager policy can decide not only *which* page
goes but *whose*:

* ``local-lru``: each space is entitled to an equal share of the frames; a fault of a
  space at or over its share evicts its own least recently used page, otherwise the LRU
  page of the space most over its share (fixed equal allocation, local replacement).
  ``lru`` is the global counterpart (any space's LRU page).
* ``ws`` (Denning's working set, window tau references of the space's own virtual time):
  pages outside their space's working set go first, longest-unreferenced first; when
  every page is in some working set, the faulting space replaces locally.
* ``pff`` (page-fault frequency, threshold T): a space faulting again within T of its
  own references is given a frame from the other spaces (global LRU among them); one
  faulting less often shrinks -- it replaces its own pages, first those not referenced
  since its previous fault.

The pager knows RAM is full when it is asked to evict, so the resident count it sees is
the frame count; shares are computed from it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from ._base import ReplacementPolicy

__all__ = ["LocalLRUPolicy", "PFFPolicy", "WorkingSetPolicy"]


class _SpacePolicy(ReplacementPolicy):
    """Shared bookkeeping: each page's space, per-space LRU order and virtual time."""

    precise = True

    def __init__(self) -> None:
        self._space: dict[int, int] = {}  # handle -> space tag (0 until told)
        self._lru: dict[int, OrderedDict[int, int]] = {}  # tag -> handle -> last ref vtime
        self._vtime: dict[int, int] = {}  # tag -> references made by the space
        self._for = 0  # the space the next choice serves

    def _place(self, handle: int, tag: int) -> None:
        old = self._space.get(handle)
        if old is not None:
            self._lru[old].pop(handle, None)
            if not self._lru[old]:
                del self._lru[old]
        self._space[handle] = tag
        self._lru.setdefault(tag, OrderedDict())[handle] = self._vtime.get(tag, 0)

    def admit(self, handle: int) -> None:
        if handle not in self._space:
            self._place(handle, 0)

    def spaces(self, handles: Sequence[int], tags: Sequence[int]) -> None:
        for h, tag in zip(handles, tags, strict=False):
            if h in self._space:
                self._place(h, tag)

    def remove(self, handle: int) -> None:
        tag = self._space.pop(handle, None)
        if tag is not None:
            self._lru[tag].pop(handle, None)
            if not self._lru[tag]:
                del self._lru[tag]

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            tag = self._space.get(h)
            if tag is not None:
                t = self._vtime[tag] = self._vtime.get(tag, 0) + 1
                order = self._lru[tag]
                order[h] = t
                order.move_to_end(h)

    def faulting(self, tag: int) -> None:
        self._for = tag

    def _own_lru(self, tag: int, n: int) -> list[int]:
        return list(self._lru.get(tag, {}))[:n]

    def _global_lru(self, n: int, exclude: int | None = None) -> list[int]:
        """The ``n`` pages referenced longest ago in their own space's virtual time
        (age = space vtime - last reference), oldest first."""
        aged = [(self._vtime.get(tag, 0) - t, h) for tag, order in self._lru.items()
                if tag != exclude for h, t in order.items()]
        aged.sort(key=lambda a: -a[0])
        return [h for _, h in aged[:n]]

    def __contains__(self, handle: object) -> bool:
        return handle in self._space

    def __len__(self) -> int:
        return len(self._space)


class LocalLRUPolicy(_SpacePolicy):
    """Equal shares, local replacement (see the module doc)."""

    name = "local-lru"

    def choose(self, n: int) -> list[int]:
        if n <= 0 or not self._lru:
            return []
        share = max(1, len(self) // max(1, len(self._lru)))
        if len(self._lru.get(self._for, ())) >= share:
            return self._own_lru(self._for, n)
        richest = max(self._lru, key=lambda tag: len(self._lru[tag]))
        return self._own_lru(richest, n)


class WorkingSetPolicy(_SpacePolicy):
    """Denning's working set with window ``tau`` (see the module doc)."""

    name = "ws"

    def __init__(self, tau: int = 10) -> None:
        super().__init__()
        self.tau = tau

    def choose(self, n: int) -> list[int]:
        if n <= 0:
            return []
        outside = [(self._vtime.get(tag, 0) - t, h) for tag, order in self._lru.items()
                   for h, t in order.items() if self._vtime.get(tag, 0) - t >= self.tau]
        outside.sort(key=lambda a: -a[0])
        victims = [h for _, h in outside[:n]]
        if len(victims) < n:
            victims += [h for h in self._own_lru(self._for, n) if h not in victims]
        if len(victims) < n:
            victims += [h for h in self._global_lru(n) if h not in victims]
        return victims[:n]


class PFFPolicy(_SpacePolicy):
    """Page-fault frequency with threshold ``T`` references (see the module doc)."""

    name = "pff"

    def __init__(self, threshold: int = 10) -> None:
        super().__init__()
        self.threshold = threshold
        self._last_fault: dict[int, int] = {}

    def choose(self, n: int) -> list[int]:
        if n <= 0 or not self._space:
            return []
        tag = self._for
        now = self._vtime.get(tag, 0)
        interval = now - self._last_fault.get(tag, -(1 << 62))
        self._last_fault[tag] = now
        others = [t for t in self._lru if t != tag]
        if interval <= self.threshold and others:  # faulting often: grow
            return self._global_lru(n, exclude=tag)
        own = self._lru.get(tag)
        if not own:
            return self._global_lru(n)
        prev = now - interval
        stale = [h for h, t in own.items() if t <= prev]  # not used since the last fault
        return (stale + [h for h in own if h not in stale])[:n]
