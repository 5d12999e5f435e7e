"""Address spaces and page tables (sans-IO kernel data).

A page-table entry records what the hardware would (present, rights, accessed, dirty,
frame) plus what the kernel keeps in trusted memory for sealing: the page's current
version and the version of its valid sealed copy, if any.
"""

from __future__ import annotations

from ..cspace import Rights
from ..errors import ConfigError, SegmentationFault
from ..pagefmt import PAGE_SIZE

__all__ = ["PTE", "AddressSpace"]

USER_BASE_VPN = 0x10  # keep page 0 unmapped: null pointers fault


class PTE:
    """One page-table entry.  ``state``: zero (never touched), resident, swapped."""

    __slots__ = ("accessed", "dirty", "frame", "handle", "present", "rights", "sealed_version",
                 "state", "version")

    def __init__(self, rights: Rights) -> None:
        self.present = False
        self.rights = rights
        self.accessed = False
        self.dirty = False
        self.frame = -1
        self.state = "zero"
        self.handle = 0
        self.version = 0
        self.sealed_version: int | None = None


class AddressSpace:
    """The virtual memory of one process incarnation."""

    def __init__(self, asid: int, incarnation: int) -> None:
        self.asid = asid
        self.incarnation = incarnation
        self.pages: dict[int, PTE] = {}
        self.alive = True
        self._next_vpn = USER_BASE_VPN

    def map_region(self, npages: int, rights: Rights, addr: int | None = None) -> int:
        """Reserve ``npages`` virtual pages (demand-zero); returns the start address."""
        if not isinstance(npages, int) or npages < 1 or npages > (1 << 24):
            raise ConfigError(f"cannot map {npages!r} pages")
        if addr is None:
            start = self._next_vpn
        else:
            if addr % PAGE_SIZE or addr < 0:
                raise ConfigError(f"address {addr:#x} is not page-aligned")
            start = addr // PAGE_SIZE
            if start < USER_BASE_VPN:
                raise ConfigError(f"address {addr:#x} is below the user base")
            if any(vpn in self.pages for vpn in range(start, start + npages)):
                raise ConfigError(f"range at {addr:#x} overlaps an existing mapping")
        for vpn in range(start, start + npages):
            self.pages[vpn] = PTE(rights)
        self._next_vpn = max(self._next_vpn, start + npages)
        return start * PAGE_SIZE

    def unmap_region(self, addr: int, length: int) -> list[PTE]:
        """Remove the mapping of every page in ``[addr, addr + length)``."""
        if addr % PAGE_SIZE or length <= 0:
            raise ConfigError("munmap needs a page-aligned address and a positive length")
        first = addr // PAGE_SIZE
        last = (addr + length - 1) // PAGE_SIZE
        missing = [v for v in range(first, last + 1) if v not in self.pages]
        if missing:
            raise SegmentationFault(f"munmap of unmapped page {missing[0] * PAGE_SIZE:#x}")
        return [self.pages.pop(vpn) for vpn in range(first, last + 1)]

    def resident_count(self) -> int:
        return sum(1 for p in self.pages.values() if p.present)

    def swapped_count(self) -> int:
        return sum(1 for p in self.pages.values() if p.state == "swapped")
