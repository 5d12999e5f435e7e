"""Swap read-ahead: which swapped pages come in with a page-in (trusted, sans-IO).

Linux's swap read-ahead is the anchor.  When a page-in continues a sequential run of
its address space (it faults on the page right after the last one brought in), the
swapped pages that follow it come in the same trip: one ``fetch_many`` to the pager and
one ``unseal`` for the cluster.  A fault off the run reads only its own page, so random
access pays nothing.  Read-ahead never evicts: a neighbour comes in only if a frame is
free, and only if no other task is faulting or evicting it.  Each page of a cluster is
verified like any page-in; a refused neighbour is just not mapped.
"""

from __future__ import annotations

from typing import Any

from .._protocols import MAX_BATCH
from .._states import PageState
from ._aspace import PTE, AddressSpace
from ._frames import FrameTable

__all__ = ["ReadAhead"]


class ReadAhead:
    """Sequential-run detection per address space and the clusters it allows."""

    def __init__(self, window: int, frames: FrameTable) -> None:
        self.window = min(window, MAX_BATCH - 1)
        self.frames = frames
        self._next: dict[AddressSpace, int] = {}  # where each sequential run goes on

    def cluster(self, aspace: AddressSpace, vpn: int,
                busy: dict[PTE, Any]) -> list[tuple[int, PTE, int]]:
        """The neighbours to bring in with ``vpn``: (vpn, pte, frame) each, their frames
        taken from the free list (the caller maps or frees them)."""
        want = self.window if self._next.get(aspace) == vpn else 0
        out: list[tuple[int, PTE, int]] = []
        for v in range(vpn + 1, vpn + 1 + want):
            pte = aspace.pages.get(v)
            if pte is None or pte.present or pte.state != PageState.SWAPPED or pte in busy:
                break
            frame = self.frames.alloc()
            if frame is None:
                break
            out.append((v, pte, frame))
        self._next[aspace] = vpn + 1 + len(out)
        return out

    def forget(self, aspace: AddressSpace) -> None:
        self._next.pop(aspace, None)
