"""Exact and offline replacement policies (sans-IO; UNTRUSTED, in the pager).

* :class:`LFUPolicy` and :class:`MRUPolicy` are exact on a precise boot, where the kernel
  reports every reference in order (``boot(precise=True)``, see ``mmu/_reflog.py``).
* :class:`OPTPolicy` is Belady's MIN: evict the resident page whose next use is farthest
  in the future.  It is *offline*: it needs the kernel's oracle mode (the simulator's
  ``access(..., future=True)``), in which the kernel attaches to each reported reference
  the trace position of that page's next reference.  The pager sees nothing more than
  in a normal boot -- opaque handles and positions, for pages it is told about -- and a
  normal boot never sends positions (OPT then degrades to FIFO order).

All three keep a lazily-pruned heap, so each reference costs O(log n) and a whole trace
O(n log n) (OSTEP's OPT scans the future at every miss: quadratic).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence

from ._base import ReplacementPolicy, _OrderedPolicy

__all__ = ["NEVER", "LFUPolicy", "MRUPolicy", "OPTPolicy"]

NEVER = (1 << 63) - 1


class OPTPolicy(ReplacementPolicy):
    """Belady's MIN: evict the page whose next reference is farthest away.

    Ties can only be between pages never referenced again (positions are distinct);
    they are broken as OSTEP's ``paging-policy.py`` does: the page that entered memory
    *last* is evicted first.  The fault count does not depend on the tie-break.
    """

    name = "opt"
    precise = True
    needs_future = True

    def __init__(self) -> None:
        self._next: dict[int, int] = {}  # handle -> position of its next reference
        self._seq: dict[int, int] = {}  # handle -> admission number
        self._heap: list[tuple[int, int, int]] = []  # (-next use, -admission, handle)
        self._count = itertools.count()

    def admit(self, handle: int) -> None:
        if handle not in self._seq:
            self._seq[handle] = next(self._count)
            self._next[handle] = NEVER  # until the kernel reports its reference
            self._push(handle)

    def remove(self, handle: int) -> None:
        self._seq.pop(handle, None)
        self._next.pop(handle, None)

    def next_uses(self, handles: Sequence[int], positions: Sequence[int]) -> None:
        for handle, pos in zip(handles, positions, strict=False):
            if handle in self._next and self._next[handle] != pos:
                self._next[handle] = pos
                self._push(handle)

    def _push(self, handle: int) -> None:
        heapq.heappush(self._heap, (-self._next[handle], -self._seq[handle], handle))
        if len(self._heap) > 4 * len(self._seq) + 64:  # too many stale entries: rebuild
            self._heap = [(-self._next[h], -self._seq[h], h) for h in self._seq]
            heapq.heapify(self._heap)

    def _valid(self, entry: tuple[int, int, int]) -> bool:
        nxt, seq, handle = entry
        return self._seq.get(handle) == -seq and self._next.get(handle) == -nxt

    def choose(self, n: int) -> list[int]:
        """The ``n`` pages used farthest in the future (they stay known to the policy)."""
        out: list[tuple[int, int, int]] = []
        while self._heap and len(out) < n:
            entry = heapq.heappop(self._heap)
            if self._valid(entry):
                out.append(entry)
        for entry in out:
            heapq.heappush(self._heap, entry)
        return [h for _, _, h in out]

    def __contains__(self, handle: object) -> bool:
        return handle in self._seq

    def __len__(self) -> int:
        return len(self._seq)


class LFUPolicy(ReplacementPolicy):
    """Least frequently used: evict the page referenced fewest times since it entered
    memory; ties go to the least recently used of them.  Exact on a precise boot."""

    name = "lfu"
    precise = True

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._clock = itertools.count()
        self._heap: list[tuple[int, int, int]] = []  # (count, last reference, handle)

    def admit(self, handle: int) -> None:
        if handle not in self._count:
            self._count[handle] = 0
            self._touch(handle)

    def remove(self, handle: int) -> None:
        self._count.pop(handle, None)
        self._last.pop(handle, None)

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self._count:
                self._count[h] += 1
                self._touch(h)

    def _touch(self, handle: int) -> None:
        self._last[handle] = t = next(self._clock)
        heapq.heappush(self._heap, (self._count[handle], t, handle))
        if len(self._heap) > 4 * len(self._count) + 64:
            self._heap = [(self._count[h], self._last[h], h) for h in self._count]
            heapq.heapify(self._heap)

    def choose(self, n: int) -> list[int]:
        out: list[tuple[int, int, int]] = []
        while self._heap and len(out) < n:
            entry = heapq.heappop(self._heap)
            count, t, h = entry
            if self._count.get(h) == count and self._last.get(h) == t:
                out.append(entry)
        for entry in out:
            heapq.heappush(self._heap, entry)
        return [h for _, _, h in out]

    def __contains__(self, handle: object) -> bool:
        return handle in self._count

    def __len__(self) -> int:
        return len(self._count)


class MRUPolicy(_OrderedPolicy):
    """Most recently used: evict the page referenced last (good for cyclic scans
    larger than memory).  Exact on a precise boot."""

    name = "mru"
    precise = True

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self._order:
                self._order.move_to_end(h)

    def choose(self, n: int) -> list[int]:
        return list(itertools.islice(reversed(self._order), max(0, n)))  # (n < 0: none)
