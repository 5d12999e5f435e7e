"""Virtual pages are charged to the domain's ``pages`` quota at mmap and released at
munmap and exit; over the quota is a typed QuotaExceeded that changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern._pagefmt import PAGE_SIZE


async def _run(kernel: capkern.Kernel, prog: Any, **spawn: Any) -> capkern.ExitStatus:
    return await kernel.wait(kernel.spawn(prog, **spawn))


async def test_pages_are_charged_at_mmap_and_released_at_munmap(
        kernel: capkern.Kernel) -> None:
    async def prog(proc: capkern.Process) -> None:
        usage = proc._dom.usage
        a = proc.mmap(10 * PAGE_SIZE)
        b = proc.mmap(PAGE_SIZE + 1)  # rounds up to two pages
        assert usage.pages == 12
        proc.munmap(a + 2 * PAGE_SIZE, 3 * PAGE_SIZE)
        assert usage.pages == 9
        proc.munmap(b, 2 * PAGE_SIZE)
        assert usage.pages == 7

    assert (await _run(kernel, prog)).ok


async def test_over_quota_mmap_is_refused_and_changes_nothing(kernel: capkern.Kernel) -> None:
    async def prog(proc: capkern.Process) -> None:
        usage = proc._dom.usage
        base = proc.mmap(6 * PAGE_SIZE)
        with pytest.raises(capkern.QuotaExceeded) as info:
            proc.mmap(5 * PAGE_SIZE)
        assert info.value.resource == "pages" and info.value.limit == 10
        with pytest.raises(capkern.QuotaExceeded):
            proc.mmap(5 * PAGE_SIZE, addr=0x4000_0000)
        assert usage.pages == 6
        proc.mmap(4 * PAGE_SIZE, addr=0x4000_0000)  # the refused one left no region
        proc.munmap(base, 6 * PAGE_SIZE)
        proc.mmap(6 * PAGE_SIZE)  # released pages are usable again

    assert (await _run(kernel, prog, quota={"pages": 10})).ok


async def test_exit_releases_every_page(kernel: capkern.Kernel) -> None:
    async def prog(proc: capkern.Process) -> None:
        proc.mmap(1 << 20)
        base = proc.mmap(3 * PAGE_SIZE)
        await proc.write(base, b"x")

    pid = kernel.spawn(prog)
    assert (await kernel.wait(pid)).ok
    assert kernel._domain(pid).usage.pages == 0


async def test_a_mapping_bigger_than_the_default_quota_is_refused(
        kernel: capkern.Kernel) -> None:
    async def prog(proc: capkern.Process) -> None:
        with pytest.raises(capkern.QuotaExceeded):
            proc.mmap((1 << 22) * PAGE_SIZE)  # 16 GiB against the default 1 GiB

    assert (await _run(kernel, prog)).ok
