"""Addresses, lengths and counts are checked against the 48-bit address space and the
process's mappings before the kernel does any work, and one domain's bad input never
reaches another domain's fault."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import trio

import capkern
from capkern import programs
from capkern._cspace import Rights
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._aspace import MAX_IO, USER_BASE_VPN, VA_LIMIT, VA_PAGES, AddressSpace, check_span
from capkern.testing import Evidence, Snoop, attack_pager

RW = Rights.READ | Rights.WRITE


async def _in_process(kernel: capkern.Kernel, body: Any) -> capkern.ExitStatus:
    async def prog(proc: capkern.Process) -> None:
        await body(proc)

    return await kernel.wait(kernel.spawn(prog))


@pytest.mark.parametrize("length,addr", [
    (PAGE_SIZE, (1 << 64) * PAGE_SIZE),          # the binding could not encode it
    (PAGE_SIZE, VA_LIMIT),                        # just past the end
    (2 * PAGE_SIZE, VA_LIMIT - PAGE_SIZE),        # runs off the end
    (PAGE_SIZE, -PAGE_SIZE),
    (PAGE_SIZE, 0),                               # below the user base
    (PAGE_SIZE, PAGE_SIZE * USER_BASE_VPN + 1),   # not page-aligned
    (PAGE_SIZE, 1.5),
    (PAGE_SIZE, "0x1000"),
    (VA_LIMIT, None),                             # more than the address space
    (1 << 80, None),
    (True, None),
])
async def test_mmap_outside_the_address_space_is_refused(length: Any, addr: Any,
                                                         kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        with pytest.raises(capkern.ConfigError):
            proc.mmap(length, addr=addr)
        assert proc._dom.usage.pages == 0  # nothing charged

    assert (await _in_process(kernel, body)).ok


async def test_the_last_page_of_the_address_space_is_usable(kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        top = proc.mmap(PAGE_SIZE, addr=VA_LIMIT - PAGE_SIZE)
        await proc.write(top + PAGE_SIZE - 4, b"last")
        assert await proc.read(top + PAGE_SIZE - 4, 4) == b"last"
        with pytest.raises(capkern.SegmentationFault):
            await proc.read(top + PAGE_SIZE - 4, 5)

    assert (await _in_process(kernel, body)).ok


async def test_huge_read_of_a_small_mapping_fails_fast_without_allocating(
        kernel: capkern.Kernel) -> None:
    peaks: list[int] = []

    async def body(proc: capkern.Process) -> None:
        base = proc.mmap(PAGE_SIZE)
        tracemalloc.start()
        try:
            with pytest.raises(capkern.ConfigError, match="limit of one call"):
                await proc.read(base, 1 << 30)
            with pytest.raises(capkern.SegmentationFault, match="not mapped"):
                await proc.read(base, MAX_IO)  # a legal length, past the mapping
            with pytest.raises(capkern.SegmentationFault):
                await proc.write(base, bytes(2 * PAGE_SIZE))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    assert (await _in_process(kernel, body)).ok
    assert peaks[0] < 1 << 20  # nothing near a gigabyte (or even a page table) was made
    assert kernel.stats.faults == 0  # refused before a single fault


async def test_an_access_is_checked_in_full_before_any_byte_moves(
        kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        rw = proc.mmap(PAGE_SIZE, addr=0x100000)
        proc.mmap(PAGE_SIZE, "r", addr=0x101000)
        await proc.write(rw, b"A" * PAGE_SIZE)
        with pytest.raises(capkern.ProtectionFault, match="0x101000"):
            await proc.write(rw + PAGE_SIZE - 2, b"BBBB")  # the first two bytes are fine
        assert await proc.read(rw + PAGE_SIZE - 2, 2) == b"AA"  # ... and did not land
        with pytest.raises(capkern.SegmentationFault, match="0x102000"):
            await proc.read(rw, 3 * PAGE_SIZE)

    assert (await _in_process(kernel, body)).ok


@pytest.mark.parametrize("addr,n,error", [
    (0x100000, -1, capkern.ConfigError),
    (0x100000, MAX_IO + 1, capkern.ConfigError),
    (0x100000, 1.0, capkern.ConfigError),
    ("0x100000", 1, capkern.ConfigError),
    (None, 1, capkern.ConfigError),
    (-1, 1, capkern.SegmentationFault),
    (1 << 64, 1, capkern.SegmentationFault),
    (VA_LIMIT - 1, 2, capkern.SegmentationFault),
])
async def test_bad_read_arguments_are_typed_errors(addr: Any, n: Any, error: type[Exception],
                                                   kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        proc.mmap(PAGE_SIZE, addr=0x100000)
        with pytest.raises(error):
            await proc.read(addr, n)

    assert (await _in_process(kernel, body)).ok


@pytest.mark.parametrize("addr,size,error", [
    ("0x100000", 1, capkern.ConfigError),
    (None, 1, capkern.ConfigError),
    (-1, 1, capkern.SegmentationFault),
    (1 << 64, 1, capkern.SegmentationFault),
    (VA_LIMIT - 1, 2, capkern.SegmentationFault),
    (0x100000, MAX_IO + 1, capkern.ConfigError),
])
async def test_bad_write_arguments_are_typed_errors(addr: Any, size: int, error: type[Exception],
                                                    kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        proc.mmap(PAGE_SIZE, addr=0x100000)
        with pytest.raises(error):
            await proc.write(addr, bytes(size))

    assert (await _in_process(kernel, body)).ok


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2]])
async def test_write_of_non_bytes_is_a_typed_error(data: Any, kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        base = proc.mmap(PAGE_SIZE)
        with pytest.raises(capkern.ConfigError):
            await proc.write(base, data)

    assert (await _in_process(kernel, body)).ok


@pytest.mark.parametrize("addr,length,error", [
    (0x100000, 1 << 62, capkern.SegmentationFault),
    ((1 << 64) * PAGE_SIZE, PAGE_SIZE, capkern.SegmentationFault),
    (0x100000, 0, capkern.ConfigError),
    (0x100001, PAGE_SIZE, capkern.ConfigError),
    (0x100000, "4096", capkern.ConfigError),
    (0x100000, 2 * PAGE_SIZE, capkern.SegmentationFault),  # the second page is not mapped
])
async def test_bad_munmap_changes_nothing(addr: Any, length: Any, error: type[Exception],
                                          kernel: capkern.Kernel) -> None:
    async def body(proc: capkern.Process) -> None:
        base = proc.mmap(PAGE_SIZE, addr=0x100000)
        await proc.write(base, b"kept")
        with pytest.raises(error):
            proc.munmap(addr, length)
        assert await proc.read(base, 4) == b"kept"
        assert proc._dom.usage.pages == 1

    assert (await _in_process(kernel, body)).ok


async def test_hostile_memory_program_is_refused_everything(kernel: capkern.Kernel) -> None:
    status = await kernel.wait(kernel.spawn(programs.hostile_memory))
    assert status.ok, status  # exit code = attempts the kernel accepted
    assert kernel.stats.faults <= 1  # only its own one-page write faulted


async def test_one_process_bad_input_never_reaches_another_process_fault(
        capkern_clock: Any) -> None:
    """Honest processes share eviction batches with a hostile one that throws every bad
    address at the kernel: they are unaffected."""
    ev = Evidence()
    async with capkern.boot(ram_pages=4, evict_batch=4,
                            pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        hostile = [kernel.spawn(programs.hostile_memory) for _ in range(2)]
        honest = [kernel.spawn(programs.sequential, 10, 2, seed) for seed in range(2)]
        statuses = [await kernel.wait(p) for p in [*hostile, *honest]]
    assert all(s.ok for s in statuses), statuses
    assert not kernel.events.of_kind("internal_error")


async def test_an_unencodable_binding_fails_its_page_alone(capkern_clock: Any) -> None:
    """Defence in depth: should a page ever carry a binding the sealer cannot encode (a
    kernel bug), it stays resident and the rest of its eviction batch is stored."""
    done = trio.Event()

    async def holder(proc: capkern.Process) -> None:
        base = proc.mmap(2 * PAGE_SIZE)
        for i in range(2):
            await proc.write(base + i * PAGE_SIZE, b"held")
        await done.wait()
        for i in range(2):
            assert await proc.read(base + i * PAGE_SIZE, 4) == b"held"

    async with capkern.boot(ram_pages=4, evict_batch=4, policy="fifo") as kernel:
        pid = kernel.spawn(holder)
        await trio.sleep(1)
        space = kernel._domain(pid).aspace
        assert space is not None
        space.incarnation = 1 << 64  # corrupt: no longer encodable
        honest = kernel.spawn(programs.sequential, 8, 2, 1)
        honest_status = await kernel.wait(honest)
        space.incarnation = 0
        done.set()
        holder_status = await kernel.wait(pid)
    assert honest_status.ok, honest_status
    assert holder_status.ok, holder_status
    assert any("unencodable" in e.detail for e in kernel.events.of_kind("internal_error"))


# -- sans-IO ----------------------------------------------------------------------------------


def test_check_span_is_constant_time_arithmetic() -> None:
    assert check_span(0, 0) == (0, 0)
    assert check_span(VA_LIMIT - 1, 1) == (VA_LIMIT - 1, 1)
    with pytest.raises(capkern.SegmentationFault):
        check_span(VA_LIMIT, 1)
    with pytest.raises(capkern.ConfigError):
        check_span(True, 1)


def test_auto_placement_finds_a_gap_when_the_top_is_taken() -> None:
    space = AddressSpace(1, 0)
    space.map_region(1, RW, (VA_PAGES - 1) * PAGE_SIZE)  # pins the bump pointer at the top
    addr = space.map_region(4, RW)
    assert addr == USER_BASE_VPN * PAGE_SIZE
    assert space.mapped_pages == 5


async def test_checked_workload_handles_hostile_and_huge_mappings(capkern_clock: Any) -> None:
    """The kit's checked handle costs no more than the kernel: a huge mapping is a range,
    a refused munmap/write leaves its shadow alone, bad arguments stay typed errors."""
    from capkern.testing import assert_no_wrong_reads, run_workload

    async def prog(proc: Any) -> int:
        big = proc.mmap((1 << 18) * PAGE_SIZE)
        await proc.write(big + 5 * PAGE_SIZE, b"five")
        assert await proc.read(big + 5 * PAGE_SIZE - 2, 8) == b"\0\0five\0\0"
        for addr, length in ((big, 1 << 62), ("x", 1)):
            with pytest.raises(capkern.CapkernError):
                proc.munmap(addr, length)
        with pytest.raises(capkern.CapkernError):
            await proc.write("x", b"1")
        assert await proc.read(big + 5 * PAGE_SIZE, 4) == b"five"
        proc.munmap(big + 4 * PAGE_SIZE, 3 * PAGE_SIZE)
        proc.mmap(3 * PAGE_SIZE, addr=big + 4 * PAGE_SIZE)
        assert await proc.read(big + 5 * PAGE_SIZE, 4) == bytes(4)  # zero again
        return 0

    async with capkern.boot(ram_pages=8) as kernel:
        work = await run_workload(kernel, prog)
        hostile = await run_workload(kernel, programs.hostile_memory)
    assert_no_wrong_reads(work)
    assert_no_wrong_reads(hostile)
