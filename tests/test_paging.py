"""Sealed demand paging end to end: working sets far larger than RAM, every policy and
both block device backends, several processes at once, lifecycle and versions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

import capkern
from capkern import programs
from capkern._pagefmt import PAGE_SIZE


async def _wait_all(kernel: capkern.Kernel, pids: list[int]) -> list[capkern.ExitStatus]:
    return [await kernel.wait(p) for p in pids]


@pytest.mark.parametrize("backend", ["memory", "file"])
@pytest.mark.parametrize("policy", ["fifo", "clock", "lru", "random"])
async def test_working_set_larger_than_ram_each_policy(policy: str, backend: str,
                                                      tmp_path: Path) -> None:
    spec = "memory" if backend == "memory" else f"file:{tmp_path / 'swap.img'}"
    async with capkern.boot(ram_pages=8, policy=policy, blockdev=spec, swap_blocks=1024) as kernel:
        pids = [kernel.spawn(programs.random_ws, 40, 200, seed, name=f"p{seed}")
                for seed in range(3)]
        statuses = await _wait_all(kernel, pids)
        assert all(s.ok for s in statuses), statuses
        stats = kernel.stats
        assert stats.page_ins > 0 and stats.evictions > 0 and stats.seals > 0
        assert stats.integrity_faults == 0


async def test_file_backend_real_io(tmp_path: Path) -> None:
    path = tmp_path / "swap.img"
    async with capkern.boot(ram_pages=6, blockdev=f"file:{path}", swap_blocks=512) as kernel:
        pids = [kernel.spawn(programs.sequential, 30, 2, seed) for seed in range(2)]
        assert all(s.ok for s in await _wait_all(kernel, pids))
        assert kernel.stats.page_ins > 0
        data = path.read_bytes()
    assert len(data) == 512 * PAGE_SIZE
    # sealed pages really went to the file, and no plaintext page is in it
    assert any(data)
    for seed in range(2):
        for page in range(30):
            for r in range(2):
                assert programs.page_pattern(seed, page, r)[:64] not in data


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
async def test_both_ciphers(cipher: str) -> None:
    async with capkern.boot(ram_pages=4, cipher=cipher) as kernel:
        pid = kernel.spawn(programs.sequential, 16, 2, 5)
        assert (await kernel.wait(pid)).ok
        assert kernel.stats.unseals > 0


async def test_reads_and_writes_across_page_boundaries() -> None:
    async def prog(proc: capkern.Process) -> int:
        base = proc.mmap(6 * PAGE_SIZE)
        blob = random.Random(1).randbytes(3 * PAGE_SIZE + 100)
        await proc.write(base + PAGE_SIZE - 50, blob)
        # fill RAM with something else so the blob's pages are evicted
        other = proc.mmap(16 * PAGE_SIZE)
        for i in range(16):
            await proc.write(other + i * PAGE_SIZE, b"x" * 10)
        back = await proc.read(base + PAGE_SIZE - 50, len(blob))
        zero = await proc.read(base, 100)
        return 0 if back == blob and zero == bytes(100) else 1

    async with capkern.boot(ram_pages=4) as kernel:
        status = await kernel.wait(kernel.spawn(prog))
        assert status.ok, status
        assert kernel.stats.page_ins >= 3


async def test_rights_and_unmapped_addresses_are_typed_faults() -> None:
    seen: list[str] = []

    async def prog(proc: capkern.Process) -> None:
        ro = proc.mmap(PAGE_SIZE, "r")
        assert await proc.read(ro, 8) == bytes(8)
        for attempt in (proc.write(ro, b"x"), proc.read(0, 1), proc.read(ro + PAGE_SIZE, 1)):
            try:
                await attempt
            except capkern.Fault as exc:
                seen.append(type(exc).__name__)

    async with capkern.boot(ram_pages=4) as kernel:
        assert (await kernel.wait(kernel.spawn(prog))).ok
    assert seen == ["ProtectionFault", "SegmentationFault", "SegmentationFault"]


async def test_clean_pages_are_not_resealed() -> None:
    async def prog(proc: capkern.Process) -> None:
        base = proc.mmap(12 * PAGE_SIZE)
        for i in range(12):
            await proc.write(base + i * PAGE_SIZE, bytes([i]) * 8)
        for _ in range(3):  # read-only sweeps: pages come back clean
            for i in range(12):
                assert await proc.read(base + i * PAGE_SIZE, 8) == bytes([i]) * 8

    async with capkern.boot(ram_pages=4, evict_batch=2) as kernel:
        assert (await kernel.wait(kernel.spawn(prog))).ok
        assert kernel.stats.clean_drops > 0
        # every page sealed once when first evicted dirty, never again while clean
        assert kernel.stats.seals <= 12


async def test_exit_frees_frames_and_discards_pages(capkern_clock: trio.abc.Clock) -> None:
    async with capkern.boot(ram_pages=8) as kernel:
        pid = kernel.spawn(programs.sequential, 20, 1, 3)
        assert (await kernel.wait(pid)).ok
        await trio.sleep(1)  # discards are pooled for a short while (mmu/_discards.py)
        assert kernel.vm is not None
        assert kernel.vm.frames.free_count == 8
        stats = await kernel.vm.server_stats()
        assert stats["pager"]["swap_used"] == 0
        assert stats["pager"]["discard"] >= 1


async def test_respawned_process_never_sees_predecessor_pages() -> None:
    async def writer(proc: capkern.Process) -> None:
        base = proc.mmap(10 * PAGE_SIZE)
        for i in range(10):
            await proc.write(base + i * PAGE_SIZE, b"SECRET" * 100)

    async def reader(proc: capkern.Process) -> int:
        base = proc.mmap(10 * PAGE_SIZE)
        for i in range(10):
            if await proc.read(base + i * PAGE_SIZE, 600) != bytes(600):
                return 1
        return 0

    async with capkern.boot(ram_pages=4) as kernel:
        assert (await kernel.wait(kernel.spawn(writer))).ok
        status = await kernel.wait(kernel.spawn(reader))
        assert status.ok, status


async def test_munmap_then_access_faults() -> None:
    async def prog(proc: capkern.Process) -> int:
        base = proc.mmap(2 * PAGE_SIZE)
        await proc.write(base, b"hi")
        proc.munmap(base, 2 * PAGE_SIZE)
        try:
            await proc.read(base, 2)
        except capkern.SegmentationFault:
            return 0
        return 1

    async with capkern.boot(ram_pages=4) as kernel:
        assert (await kernel.wait(kernel.spawn(prog))).ok


async def test_kill_during_paging_keeps_kernel_consistent(autojump_clock) -> None:
    async with capkern.boot(ram_pages=6, blockdev_latency=0.01) as kernel:
        victim = kernel.spawn(programs.sequential, 40, 5, 1, name="victim")
        other = kernel.spawn(programs.sequential, 20, 2, 2, name="other")
        await trio.sleep(0.5)
        kernel.kill(victim)
        assert (await kernel.wait(victim)).state == "killed"
        assert (await kernel.wait(other)).ok
        await trio.sleep(0.1)
        assert kernel.vm is not None
        assert kernel.vm.frames.free_count == 6


async def test_paging_off_has_no_address_space() -> None:
    async def prog(proc: capkern.Process) -> None:
        proc.mmap(PAGE_SIZE)

    async with capkern.boot(paging=False) as kernel:
        status = await kernel.wait(kernel.spawn(prog))
        assert status.state == "failed" and "SegmentationFault" in (status.error or "")


@pytest.mark.parametrize("length", [0, -1, -4096, 1.5, "4096", True])
async def test_mmap_of_a_bad_length_is_a_typed_error(length: object) -> None:
    async def mapper(proc: capkern.Process) -> None:
        with pytest.raises(capkern.ConfigError, match="length"):
            proc.mmap(length)  # type: ignore[arg-type]
        assert proc.mmap(1) > 0  # one byte still maps a whole page

    async with capkern.boot(ram_pages=4) as kernel:
        status = await kernel.wait(kernel.spawn(mapper))
    assert status.ok, status


@pytest.mark.parametrize("where", ["missing-dir/swap.img", "a-directory"])
async def test_unusable_swap_file_is_refused_at_boot(where: str, tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(capkern.ConfigError, match="swap file"):
        async with capkern.boot(blockdev=f"file:{tmp_path / where}"):
            raise AssertionError("booted with an unusable swap file")  # pragma: no cover
