"""The resident set and what the pager has not yet heard about it (sans-IO, trusted).

The pager's policy sees opaque handles and reference/dirty bits.  It must hear them as
*changes* -- pages mapped, referenced, newly dirtied since its last request -- so the
cost of telling it does not grow with the size of RAM: the fast path logs a page-table
entry the first time its accessed (or dirty) bit goes from clear to set, and a harvest
walks only that log, never every resident page.
"""

from __future__ import annotations

from itertools import islice

from ._aspace import PTE

__all__ = ["MAX_REPORT", "Residency"]

MAX_REPORT = 1 << 16  # the PAGER contract's list bound


class Residency:
    """Handles of resident pages, in mapping order, plus the change logs for the pager.

    ``touched`` and ``dirtied`` are appended to by the fast path (no call: two list
    appends on a clear->set transition); :meth:`harvest` turns them into the report.
    """

    __slots__ = ("dirtied", "handles", "mapped", "resident", "touched")

    def __init__(self) -> None:
        self.handles: dict[int, PTE] = {}  # opaque handle -> its page's entry
        self.resident: dict[int, PTE] = {}  # resident handles, in mapping order
        self.mapped: list[int] = []  # mapped since the pager last heard
        self.touched: list[PTE] = []  # accessed bit set since the last harvest
        self.dirtied: list[PTE] = []  # dirty bit set since the last harvest

    def __len__(self) -> int:
        return len(self.resident)

    def __contains__(self, handle: int) -> bool:
        return handle in self.resident

    def map(self, handle: int, pte: PTE) -> None:
        """A page became resident (its bits are clear)."""
        self.resident[handle] = pte
        self.mapped.append(handle)
        if len(self.touched) > 2 * len(self.resident) + 64:
            self._compact()

    def unmap(self, handle: int) -> None:
        self.resident.pop(handle, None)

    def forget(self, handles: list[int]) -> None:
        """Pages that are gone for good (unmapped, their process exited)."""
        for h in handles:
            self.handles.pop(h, None)
            self.resident.pop(h, None)
        dead = set(handles)
        self.mapped = [h for h in self.mapped if h not in dead]

    def oldest(self, n: int) -> list[int]:
        """The ``n`` resident pages mapped longest ago (the FIFO fallback)."""
        return list(islice(self.resident, n))

    def harvest(self) -> tuple[list[int], list[int], list[int]]:
        """(mapped, referenced, dirty) since the last report, each at most MAX_REPORT
        long; clears the accessed bits it reports.  Costs O(changes), not O(resident)."""
        resident = self.resident
        referenced: list[int] = []
        for pte in self.touched:
            if pte.accessed and pte.present and resident.get(pte.handle) is pte:
                referenced.append(pte.handle)
            pte.accessed = False
        dirty = [pte.handle for pte in self.dirtied
                 if pte.dirty and pte.present and resident.get(pte.handle) is pte]
        self.touched = []
        self.dirtied = []
        # taken out: the caller gives them back (:meth:`unheard`) if the pager did not
        # hear; bounded: if a broken pager never hears of some pages, it cannot pick them
        mapped = list(dict.fromkeys(self.mapped))[-MAX_REPORT:]
        self.mapped = []
        return mapped, list(dict.fromkeys(referenced))[-MAX_REPORT:], \
            list(dict.fromkeys(dirty))[-MAX_REPORT:]

    def unheard(self, mapped: list[int]) -> None:
        """The pager did not take a report: its mapped pages go back in the log (pages
        mapped meanwhile stay after them)."""
        live = [h for h in mapped if h in self.handles]
        self.mapped[:0] = live

    def _compact(self) -> None:
        """Drop log entries that no longer mean anything (pages mapped and unmapped many
        times with no eviction between): the logs stay O(resident)."""
        self.touched = list({id(p): p for p in self.touched if p.accessed and p.present}
                            .values())
        self.dirtied = list({id(p): p for p in self.dirtied if p.dirty and p.present}
                            .values())
