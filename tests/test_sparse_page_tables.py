"""Sparse page tables: a mapping is a region, a page-table entry is made on first touch,
so mapping costs the same for any length and munmap costs in proportion to the pages
that were touched."""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern._cspace import Rights
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._aspace import AddressSpace

RW = Rights.READ | Rights.WRITE
HUGE = 1 << 22  # pages: 16 GiB of virtual memory


class CountingDict(dict[int, Any]):
    """A page table that counts how often it is looked at, key by key."""

    def __init__(self) -> None:
        super().__init__()
        self.probes = 0

    def __contains__(self, key: object) -> bool:
        self.probes += 1
        return super().__contains__(key)

    def __iter__(self) -> Any:
        for key in list(super().__iter__()):
            self.probes += 1
            yield key


def test_mapping_makes_no_page_table_entry() -> None:
    space = AddressSpace(1, 0)
    base = space.map_region(HUGE, RW)
    assert space.pages == {}  # nothing per page
    assert space.mapped_pages == HUGE
    assert len(space.regions()) == 1
    vpn = base // PAGE_SIZE + HUGE - 1
    pte = space.touch(vpn)
    assert pte is not None and list(space.pages) == [vpn]
    assert space.touch(vpn) is pte  # made once
    assert space.touch(base // PAGE_SIZE + HUGE) is None  # one past the end


def test_munmap_costs_in_proportion_to_touched_pages() -> None:
    space = AddressSpace(1, 0)
    space.pages = CountingDict()
    base = space.map_region(HUGE, RW)
    touched = [base // PAGE_SIZE + i for i in (0, 7, HUGE - 1)]
    for vpn in touched:
        space.touch(vpn)
    space.pages.probes = 0
    gone = space.unmap_region(base, HUGE * PAGE_SIZE)
    assert len(gone) == 3 and space.pages == {} and space.mapped_pages == 0
    assert space.pages.probes <= 10  # the 3 touched entries, not 2**22 pages


def test_partial_munmap_splits_the_region() -> None:
    space = AddressSpace(1, 0)
    base = space.map_region(10, RW)
    first = base // PAGE_SIZE
    for i in range(10):
        space.touch(first + i)
    gone = space.unmap_region(base + 3 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert len(gone) == 4
    assert [(r.start - first, r.end - first) for r in space.regions()] == [(0, 3), (7, 10)]
    assert space.mapped_pages == 6
    assert space.touch(first + 4) is None and space.touch(first + 8) is not None
    # a range spanning both remnants and the hole is refused whole
    with pytest.raises(capkern.SegmentationFault):
        space.unmap_region(base, 10 * PAGE_SIZE)
    assert space.mapped_pages == 6


def test_munmap_across_adjacent_regions() -> None:
    space = AddressSpace(1, 0)
    a = space.map_region(2, RW)
    space.map_region(2, Rights.READ)  # right after, another region with other rights
    assert len(space.regions()) == 2
    space.unmap_region(a + PAGE_SIZE, 2 * PAGE_SIZE)
    assert [r.npages for r in space.regions()] == [1, 1]


async def test_a_huge_mapping_in_a_process_touches_only_what_it_uses(
        kernel_factory: Any, capkern_clock: Any) -> None:
    async def prog(proc: capkern.Process) -> None:
        base = proc.mmap(HUGE * PAGE_SIZE)
        space = proc._dom.aspace
        assert space is not None and space.pages == {}
        await proc.write(base + (HUGE - 1) * PAGE_SIZE, b"far end")
        await proc.write(base, b"near end")
        assert await proc.read(base + (HUGE - 1) * PAGE_SIZE, 7) == b"far end"
        assert len(space.pages) == 2
        proc.munmap(base, HUGE * PAGE_SIZE)
        assert space.pages == {} and space.mapped_pages == 0

    async with kernel_factory(quota=capkern.Quota(pages=HUGE)) as kernel:
        status = await kernel.wait(kernel.spawn(prog))
    assert status.ok, status
