"""The kernel's table of opaque page handles: each handle maps to the page-table entry
that owns it, and the entry names its own page (address space, virtual page).  Checked
on a live system through evictions, page-ins, munmap and exit, since the eviction path
trusts this table to find the page a handle the pager chose stands for."""

from __future__ import annotations

import capkern
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.mmu._vm import VM


def _consistent(vm: VM) -> int:
    """Every handle maps to the entry its own page holds, under that handle."""
    for handle, pte in vm.res.handles.items():
        assert pte.handle == handle
        assert pte.aspace.pages.get(pte.vpn) is pte
    return len(vm.res.handles)


async def test_handles_name_their_own_entry_through_paging() -> None:
    seen: list[int] = []

    async with capkern.boot(ram_pages=6, evict_batch=2) as k:
        vm = k.vm
        assert vm is not None

        async def prog(proc: Process) -> None:
            base = proc.mmap(24 * PAGE_SIZE)
            for p in range(24):  # more pages than frames: evictions and page-ins
                await proc.write(base + p * PAGE_SIZE, p.to_bytes(2, "little"))
            seen.append(_consistent(vm))
            for p in range(24):
                assert await proc.read(base + p * PAGE_SIZE, 2) == p.to_bytes(2, "little")
            seen.append(_consistent(vm))
            proc.munmap(base, 12 * PAGE_SIZE)  # gone for good: out of the table
            seen.append(_consistent(vm))

        assert (await k.wait(k.spawn(prog))).ok
        after_exit = _consistent(vm)
    assert seen[0] == seen[1] == 24
    assert seen[2] == 12
    assert after_exit == 0
