"""Address spaces and sparse page tables (sans-IO kernel data).

An address space is a set of *regions* (what ``mmap`` reserved: a page range and its
rights) and a table of page-table entries made on first touch.  Mapping costs the same
for one page or 2**30 (one region, no entry); a page-table entry exists only for a page
the process has touched, so ``munmap`` costs in proportion to the touched pages.

A page-table entry records what the hardware would (present, rights, accessed, dirty,
frame) plus what the kernel keeps in trusted memory for sealing: the version of the
page's newest seal and the version of its valid sealed copy, if any.

Every address, length and count is checked against the address-space size and the
regions before any work is done (see :func:`check_span`), so a bad argument costs a
constant amount of kernel time and never reaches the fault path.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .._cspace import Rights
from .._pagefmt import PAGE_SIZE
from .._quota import Usage
from .._states import PageState
from ..errors import ConfigError, ProtectionFault, SegmentationFault

__all__ = ["MAX_IO", "PTE", "USER_BASE_VPN", "VA_BITS", "VA_LIMIT", "VA_PAGES", "AddressSpace",
           "Asids", "Region", "check_span"]

VA_BITS = 48
"""Size of a virtual address space: 48-bit addresses, as on x86-64 and AArch64."""
VA_LIMIT = 1 << VA_BITS
VA_PAGES = VA_LIMIT // PAGE_SIZE
USER_BASE_VPN = 0x10  # keep page 0 unmapped: null pointers fault
MAX_IO = 1 << 24
"""The most bytes one ``read`` or ``write`` may move (16 MiB): a longer one is refused
up front rather than allocating (and zeroing) its buffer inside the kernel."""


class PTE:
    """One page-table entry.  ``state``: zero (never touched), resident, swapped.

    It names its own page (``aspace``, ``vpn``), so the kernel's table of opaque
    handles maps a handle straight to its entry: no (address space, page) tuple per
    page beside it (kernel metadata per page is a measured figure, ``bench metadata``).
    The address space drops its entries when it dies, which breaks the cycle.
    """

    __slots__ = ("accessed", "aspace", "dirty", "frame", "handle", "present", "rights",
                 "sealed_version", "state", "version", "vpn")

    def __init__(self, rights: Rights, aspace: AddressSpace, vpn: int) -> None:
        self.aspace = aspace
        self.vpn = vpn
        self.present = False
        self.rights = rights
        self.accessed = False
        self.dirty = False
        self.frame = -1
        self.state = PageState.ZERO
        self.handle = 0
        self.version = 0
        self.sealed_version: int | None = None


@dataclass(slots=True)
class Region:
    """Virtual pages ``[start, end)`` mapped with ``rights`` by one ``mmap``."""

    start: int
    end: int
    rights: Rights

    @property
    def npages(self) -> int:
        return self.end - self.start


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise ConfigError(f"{what} must be an int, not {type(value).__name__}")
    return value


def check_span(addr: object, length: object, *, what: str = "access") -> tuple[int, int]:
    """``(addr, length)`` as ints, if the byte range lies inside the address space.

    A non-int is a :class:`ConfigError`; a negative length or one over :data:`MAX_IO`
    too; a range that leaves ``[0, VA_LIMIT)`` is a :class:`SegmentationFault`.
    Constant time: nothing is allocated or walked.
    """
    a = _int(addr, f"{what} address")
    n = _int(length, f"{what} length")
    if n < 0:
        raise ConfigError(f"{what} length must be >= 0, not {n}")
    if n > MAX_IO:
        raise ConfigError(f"{what} of {n} bytes exceeds the {MAX_IO}-byte limit of one call")
    if a < 0 or a + n > VA_LIMIT:
        raise SegmentationFault(f"{what} at {a:#x} (+{n}) is outside the {VA_BITS}-bit "
                                "address space")
    return a, n


class AddressSpace:
    """The virtual memory of one process incarnation."""

    def __init__(self, asid: int, incarnation: int) -> None:
        self.asid = asid
        self.incarnation = incarnation
        #: page-table entries of touched pages only (vpn -> PTE)
        self.pages: dict[int, PTE] = {}
        self.alive = True
        self._next_vpn = USER_BASE_VPN
        self._starts: list[int] = []  # sorted region starts
        self._regions: dict[int, Region] = {}  # start -> region
        self.mapped_pages = 0  # sum of the regions' sizes (what is charged to the quota)

    # -- regions ---------------------------------------------------------------------------

    def region_of(self, vpn: int) -> Region | None:
        """The region holding ``vpn`` (O(log regions)), or None."""
        i = bisect.bisect_right(self._starts, vpn) - 1
        if i < 0:
            return None
        region = self._regions[self._starts[i]]
        return region if vpn < region.end else None

    def regions(self) -> list[Region]:
        return [self._regions[s] for s in self._starts]

    def _overlapping(self, first: int, end: int) -> list[Region]:
        """Regions meeting ``[first, end)``, in address order."""
        i = max(0, bisect.bisect_right(self._starts, first) - 1)
        out = []
        while i < len(self._starts):
            region = self._regions[self._starts[i]]
            if region.start >= end:
                break
            if region.end > first:
                out.append(region)
            i += 1
        return out

    def _free_at(self, npages: int) -> int | None:
        """A start vpn with ``npages`` free pages: after every mapping made so far if
        that fits, else the first gap that does (O(regions))."""
        if self._next_vpn + npages <= VA_PAGES:
            return self._next_vpn
        cursor = USER_BASE_VPN
        for start in self._starts:
            if start - cursor >= npages:
                return cursor
            cursor = max(cursor, self._regions[start].end)
        return cursor if VA_PAGES - cursor >= npages else None

    def _add(self, region: Region) -> None:
        bisect.insort(self._starts, region.start)
        self._regions[region.start] = region

    def _remove(self, region: Region) -> None:
        del self._regions[region.start]
        self._starts.pop(bisect.bisect_left(self._starts, region.start))

    def plan_map(self, npages: int, addr: object = None) -> int:
        """Check a mapping of ``npages`` pages (at ``addr``, page-aligned, or anywhere)
        and return its start vpn; changes nothing.  Constant or logarithmic time."""
        if type(npages) is not int or npages < 1:
            raise ConfigError(f"cannot map {npages!r} pages")
        if npages > VA_PAGES - USER_BASE_VPN:
            raise ConfigError(f"cannot map {npages} pages: the address space has "
                              f"{VA_PAGES - USER_BASE_VPN} ({VA_BITS}-bit addresses)")
        if addr is None:
            start = self._free_at(npages)
            if start is None:
                raise ConfigError(f"no free range of {npages} pages left in the address space")
            return start
        a = _int(addr, "mmap address")
        if a % PAGE_SIZE or a < 0:
            raise ConfigError(f"address {a:#x} is not a page-aligned address")
        start = a // PAGE_SIZE
        if start < USER_BASE_VPN:
            raise ConfigError(f"address {a:#x} is below the user base")
        if start + npages > VA_PAGES:
            raise ConfigError(f"mapping {npages} pages at {a:#x} passes the end of the "
                              f"{VA_BITS}-bit address space")
        if self._overlapping(start, start + npages):
            raise ConfigError(f"range at {a:#x} overlaps an existing mapping")
        return start

    def map_region(self, npages: int, rights: Rights, addr: int | None = None) -> int:
        """Reserve ``npages`` virtual pages (demand-zero); returns the start address.
        No page-table entry is made: each is made when its page is first touched."""
        start = self.plan_map(npages, addr)
        self._add(Region(start, start + npages, rights))
        self.mapped_pages += npages
        self._next_vpn = max(self._next_vpn, start + npages)
        return start * PAGE_SIZE

    def mmap(self, length: object, rights: Rights, addr: object, usage: Usage) -> int:
        """The ``mmap`` syscall: ``length`` bytes (rounded up to pages), checked against
        the address space and charged to ``usage``'s ``pages`` before anything is made."""
        if type(length) is not int or length < 1:
            raise ConfigError(f"mmap length must be a positive int, not {length!r}")
        npages = -(-length // PAGE_SIZE)
        start = self.plan_map(npages, addr)
        usage.charge("pages", npages)
        return self.map_region(npages, rights, start * PAGE_SIZE)

    def munmap(self, addr: object, length: object, usage: Usage) -> list[PTE]:
        """The ``munmap`` syscall: returns the touched entries; releases the pages."""
        first, end = self.plan_unmap(addr, length)
        ptes = self.unmap_region(first * PAGE_SIZE, (end - first) * PAGE_SIZE)
        usage.release("pages", end - first)
        return ptes

    def plan_unmap(self, addr: object, length: object) -> tuple[int, int]:
        """Check an unmap of ``[addr, addr + length)``: every page must be mapped.
        Returns ``(first vpn, end vpn)``; changes nothing."""
        a, n = _int(addr, "munmap address"), _int(length, "munmap length")
        if a % PAGE_SIZE or n <= 0 or a < 0:
            raise ConfigError("munmap needs a page-aligned address and a positive length")
        if a + n > VA_LIMIT:
            raise SegmentationFault(f"munmap at {a:#x} (+{n}) leaves the address space")
        first, end = a // PAGE_SIZE, -(-(a + n) // PAGE_SIZE)
        cursor = first
        for region in self._overlapping(first, end):
            if region.start > cursor:
                break
            cursor = region.end
        if cursor < end:
            raise SegmentationFault(f"munmap of unmapped page {cursor * PAGE_SIZE:#x}")
        return first, end

    def unmap_region(self, addr: int, length: int) -> list[PTE]:
        """Remove the mapping of every page in ``[addr, addr + length)``; returns the
        page-table entries of the touched pages among them (cost: regions met plus
        touched pages, never the length)."""
        first, end = self.plan_unmap(addr, length)
        for region in self._overlapping(first, end):
            self._remove(region)
            if region.start < first:
                self._add(Region(region.start, first, region.rights))
            if region.end > end:
                self._add(Region(end, region.end, region.rights))
        self.mapped_pages -= end - first
        if end - first <= len(self.pages):
            vpns = [v for v in range(first, end) if v in self.pages]
        else:
            vpns = [v for v in self.pages if first <= v < end]
        return [self.pages.pop(v) for v in vpns]

    def unmap_all(self) -> list[PTE]:
        """Process exit: every region and entry goes."""
        ptes = list(self.pages.values())
        self.pages.clear()
        self._starts.clear()
        self._regions.clear()
        self.mapped_pages = 0
        return ptes

    # -- page-table entries ------------------------------------------------------------------

    def touch(self, vpn: int) -> PTE | None:
        """The entry of a mapped page, made on its first touch; None if unmapped."""
        pte = self.pages.get(vpn)
        if pte is None:
            region = self.region_of(vpn)
            if region is None:
                return None
            pte = self.pages[vpn] = PTE(region.rights, self, vpn)
        return pte

    def check_access(self, addr: int, n: int, need: Rights) -> None:
        """Refuse an access to ``[addr, addr + n)`` that would fault on an unmapped page
        or a page without ``need`` -- before any byte moves (O(regions met))."""
        if n <= 0:
            return
        first, end = addr // PAGE_SIZE, (addr + n - 1) // PAGE_SIZE + 1
        cursor = first
        want = need._value_  # plain ints: IntFlag's & builds a new enum member each time
        for region in self._overlapping(first, end):
            if region.start > cursor:
                break
            if not region.rights._value_ & want:
                what = "write" if need == Rights.WRITE else "read"
                at = max(cursor, region.start) * PAGE_SIZE
                raise ProtectionFault(f"{what} to {at:#x} denied ({region.rights.short()})")
            cursor = region.end
        if cursor < end:
            raise SegmentationFault(f"address {max(cursor * PAGE_SIZE, addr):#x} is not mapped")

    def resident_count(self) -> int:
        return sum(1 for p in self.pages.values() if p.present)

    def swapped_count(self) -> int:
        return sum(1 for p in self.pages.values() if p.state == PageState.SWAPPED)


class Asids:
    """Address-space ids: a freed asid is reused, with the next incarnation of it, so a
    binding names the process incarnation and not just the number (sans-IO)."""

    __slots__ = ("_free", "_incarnations", "_next")

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 1
        self._incarnations: dict[int, int] = {}

    def take(self) -> tuple[int, int]:
        """A free asid and its new incarnation."""
        if self._free:
            asid = self._free.pop()
        else:
            asid, self._next = self._next, self._next + 1
        incarnation = self._incarnations.get(asid, -1) + 1
        self._incarnations[asid] = incarnation
        return asid, incarnation

    def put(self, asid: int) -> None:
        self._free.append(asid)
