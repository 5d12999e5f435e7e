"""Plain in-memory page replacement simulators (sans-IO): the benchmark baseline.

They show what the policy alone costs, so ``capkern bench`` can show what driving the
same trace through the real kernel, pager and sealer adds.  They are *not* used to
produce ``capkern sim``'s counts (those come from the kernel).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["SIMULATORS", "fifo_faults", "lru_faults", "opt_faults"]

NEVER = 1 << 62


def fifo_faults(refs: Sequence[int], frames: int) -> int:
    return _queue_faults(refs, frames, hit_moves=False)


def lru_faults(refs: Sequence[int], frames: int) -> int:
    return _queue_faults(refs, frames, hit_moves=True)


def _queue_faults(refs: Sequence[int], frames: int, hit_moves: bool) -> int:
    """FIFO (a hit changes nothing) or LRU (a hit moves the page to the back): evict
    from the front of one queue."""
    mem: OrderedDict[int, None] = OrderedDict()
    faults = 0
    for page in refs:
        if page in mem:
            if hit_moves:
                mem.move_to_end(page)
            continue
        faults += 1
        if len(mem) == frames:
            mem.popitem(last=False)
        mem[page] = None
    return faults


def opt_faults(refs: Sequence[int], frames: int) -> int:
    """Belady's MIN with a lazy max-heap of next uses: O(n log n)."""
    nxt = [NEVER] * len(refs)
    seen: dict[int, int] = {}
    for i in range(len(refs) - 1, -1, -1):
        nxt[i] = seen.get(refs[i], NEVER)
        seen[refs[i]] = i
    when: dict[int, int] = {}  # resident page -> its next use
    heap: list[tuple[int, int]] = []
    faults = 0
    for i, page in enumerate(refs):
        if page not in when:
            faults += 1
            if len(when) == frames:
                while True:
                    neg, victim = heapq.heappop(heap)
                    if when.get(victim) == -neg:
                        del when[victim]
                        break
        when[page] = nxt[i]
        heapq.heappush(heap, (-nxt[i], page))
    return faults


SIMULATORS = {"fifo": fifo_faults, "lru": lru_faults, "opt": opt_faults}
