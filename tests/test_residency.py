"""The resident set tells the pager about changes only: harvests cost O(changes), report
each referenced/dirtied page once, and a failed report gives the mapped pages back."""

from __future__ import annotations

from capkern import Rights
from capkern.mmu._aspace import PTE, AddressSpace
from capkern.mmu._residency import Residency


def _resident(res: Residency, n: int) -> list[PTE]:
    aspace = AddressSpace(1, 0)
    ptes = []
    for h in range(1, n + 1):
        pte = PTE(Rights.ALL, aspace, h)
        pte.handle, pte.present = h, True
        res.handles[h] = pte
        res.map(h, pte)
        ptes.append(pte)
    return ptes


def _touch(res: Residency, pte: PTE, dirty: bool = False) -> None:
    """What the fast path does on an access."""
    if dirty and not pte.dirty:
        pte.dirty = True
        res.dirtied.append(pte)
    if not pte.accessed:
        pte.accessed = True
        res.touched.append(pte)


def test_harvest_reports_changes_and_clears_accessed_bits() -> None:
    res = Residency()
    ptes = _resident(res, 1000)
    mapped, referenced, dirty = res.harvest()
    assert mapped == list(range(1, 1001)) and referenced == [] and dirty == []
    _touch(res, ptes[5])
    _touch(res, ptes[7], dirty=True)
    _touch(res, ptes[7], dirty=True)
    assert len(res.touched) == 2  # a set bit is logged once
    assert res.harvest() == ([], [6, 8], [8])
    assert not ptes[5].accessed and ptes[7].dirty  # dirty stays until stored
    assert res.harvest() == ([], [], [])  # nothing new: nothing reported


def test_unmapped_pages_are_not_reported() -> None:
    res = Residency()
    ptes = _resident(res, 3)
    res.harvest()
    _touch(res, ptes[0], dirty=True)
    _touch(res, ptes[1])
    res.unmap(1)
    ptes[0].present = False
    res.forget([2])
    assert res.harvest() == ([], [], [])


def test_unheard_report_is_given_back_before_newer_maps() -> None:
    res = Residency()
    _resident(res, 2)
    mapped, _, _ = res.harvest()
    aspace = AddressSpace(1, 0)
    pte = PTE(Rights.ALL, aspace, 9)
    res.handles[9] = pte
    res.map(9, pte)  # mapped while the report was in flight
    res.unheard(mapped)
    assert res.harvest()[0] == [1, 2, 9]


def test_logs_stay_bounded_without_evictions() -> None:
    res = Residency()
    aspace = AddressSpace(1, 0)
    for h in range(1, 5000):  # map, touch, unmap: never harvested
        pte = PTE(Rights.ALL, aspace, h)
        pte.handle, pte.present = h, True
        res.handles[h] = pte
        res.map(h, pte)
        _touch(res, pte, dirty=True)
        pte.present = False
        res.forget([h])
    assert len(res.touched) <= 2 * len(res) + 65 and len(res.dirtied) <= 65 + 2 * len(res)
    assert res.oldest(3) == []
