"""Sealed paging onto a real NBD server (nbdkit on loopback), and a disk that lies through it.

Each test boots the real kernel with ``blockdev="nbd+unix://..."`` (or ``nbd://`` on
loopback TCP).  The attacker is a second, independent NBD connection to the same export:
it rewrites the stored blocks behind the pager's back (flipped bits, stale images), or the
server itself fails reads (nbdkit's error filter) or dies.  Whatever happens, a process
reads exactly what it wrote, or gets a typed fault; never wrong data.

These tests wait on real sockets, so they run on the real clock (an autojump clock would
jump past the kernel's deadlines while nbdkit answers).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

import capkern
from capkern import errors
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.programs import page_pattern
from capkern.servers.blockdev import NBDBackend
from capkern.testing.nbdkit import NBDKit, nbdkit_path, nbdkit_server

from .helpers import CAPKERN

pytestmark = pytest.mark.skipif(
    nbdkit_path() is None,
    reason="nbdkit is not installed: these tests page onto a real NBD server "
    "(apt-get install nbdkit)")

SWAP = 64  # blocks of swap: a 256 KiB export
PAGES = 10
RAM = 4


@dataclass
class Reads:
    """What the processes saw when they read their pages back."""

    ok: int = 0
    wrong: int = 0
    faults: list[str] = field(default_factory=list)


def writer(gate: trio.Event, written: trio.Event, seen: Reads) -> Any:
    """A program: write ``PAGES`` pages (the first ones are evicted by the later ones),
    announce it, wait for ``gate``, then read every page back and record the outcome of
    each read (typed faults are caught per page and counted)."""

    async def program(proc: Process, seed: int) -> int:
        base = proc.mmap(PAGES * PAGE_SIZE)
        for page in range(PAGES):
            await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, 0))
        written.set()
        await gate.wait()
        await _read_back(proc, base, seed, 0, seen)
        return 0

    return program


@pytest.fixture
async def server() -> AsyncIterator[NBDKit]:
    async with nbdkit_server(SWAP * PAGE_SIZE) as srv:
        yield srv


async def attacker(spec: str) -> NBDBackend:
    """A second connection to the export: the lying disk's hands."""
    return await NBDBackend.connect(spec, SWAP, PAGE_SIZE)


async def image(dev: NBDBackend) -> list[bytes]:
    return await dev.read_many(list(range(SWAP)))


def boot(spec: str, **options: Any) -> Any:
    return capkern.boot(ram_pages=RAM, blockdev=spec, swap_blocks=SWAP, evict_batch=1,
                        **options)


async def test_pages_round_trip_through_nbdkit_sealed(server: NBDKit) -> None:
    seen = Reads()
    gate, written = trio.Event(), [trio.Event(), trio.Event()]
    async with boot(server.spec) as kernel:
        pids = [kernel.spawn(writer(gate, w, seen), seed) for seed, w in zip((1, 2), written,
                                                                              strict=True)]
        for w in written:
            await w.wait()
        async with await attacker(server.spec) as disk:
            stored = [b for b in await image(disk) if any(b)]
        gate.set()
        statuses = [await kernel.wait(pid) for pid in pids]
        page_ins = kernel.stats.page_ins
    assert all(s.ok for s in statuses), statuses
    assert seen.ok == 2 * PAGES and not seen.wrong and not seen.faults
    assert page_ins > 0 and len(stored) >= PAGES  # the pages really went to nbdkit
    plain = b"".join(stored)
    for seed in (1, 2):  # confidentiality on the real disk: no 32-byte window of any page
        for page in range(PAGES):
            pattern = page_pattern(seed, page, 0)
            assert all(pattern[i:i + 32] not in plain for i in range(0, PAGE_SIZE, 512))


async def test_loopback_tcp() -> None:
    async with nbdkit_server(SWAP * PAGE_SIZE, tcp=True) as srv:
        assert srv.spec.startswith("nbd://127.0.0.1:")
        async with boot(srv.spec) as kernel:
            status = await kernel.wait(kernel.spawn(capkern.programs.sequential, 12, 2, 5))
            assert status.ok and kernel.stats.page_ins > 0


async def _tamper_and_read(server: NBDKit, tamper: Any) -> Reads:
    seen = Reads()
    gates = [(trio.Event(), trio.Event()) for _ in range(2)]
    gate_all = trio.Event()
    async with boot(server.spec) as kernel:
        pids = [kernel.spawn(writer(gate_all, written, seen), seed)
                for seed, (written, _) in zip((1, 2), gates, strict=True)]
        async with await attacker(server.spec) as disk:
            for written, _ in gates:
                await written.wait()
            await tamper(disk, gate_all)
        statuses = [await kernel.wait(pid) for pid in pids]
        integrity_faults = kernel.stats.integrity_faults
    assert all(s.state in ("exited", "failed") for s in statuses)
    assert seen.wrong == 0, "a lying disk made a process read wrong data"
    assert seen.faults and integrity_faults >= len(seen.faults)
    assert set(seen.faults) == {"IntegrityFault"}
    return seen


async def test_flipped_bits_behind_the_pager_are_refused(server: NBDKit) -> None:
    rng = random.Random(7)

    async def flip(disk: NBDBackend, gate: trio.Event) -> None:
        blocks = await image(disk)
        changed = []
        for lba, block in enumerate(blocks):
            if any(block):
                out = bytearray(block)
                out[rng.randrange(PAGE_SIZE)] ^= 1 << rng.randrange(8)
                changed.append((lba, bytes(out)))
        assert changed
        await disk.write_many(changed)
        gate.set()

    seen = await _tamper_and_read(server, flip)
    assert seen.ok + len(seen.faults) == 2 * PAGES


async def test_stale_image_written_back_is_refused(server: NBDKit) -> None:
    """Snapshot the disk with the first versions, let the pages be rewritten and evicted
    again, then put the old image back: old blocks are never accepted as new ones."""
    seen = Reads()
    gate1, gate2 = trio.Event(), trio.Event()
    first, second = trio.Event(), trio.Event()

    async def program(proc: Process, seed: int) -> int:
        base = proc.mmap(PAGES * PAGE_SIZE)
        for r in range(2):
            for page in range(PAGES):
                await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, r))
            await proc.read(base, 1)  # page 0 back in: the last pages go out
            if r == 0:
                first_done[seed] = True
                if len(first_done) == 2:
                    first.set()
                await gate1.wait()
        second_done[seed] = True
        if len(second_done) == 2:
            second.set()
        await gate2.wait()
        await _read_back(proc, base, seed, 1, seen)
        return 0

    first_done: dict[int, bool] = {}
    second_done: dict[int, bool] = {}
    async with boot(server.spec) as kernel, await attacker(server.spec) as disk:
        pids = [kernel.spawn(program, seed) for seed in (1, 2)]
        await first.wait()
        old = await image(disk)
        gate1.set()
        await second.wait()
        now = await image(disk)
        assert now != old
        await disk.write_many([(lba, b) for lba, b in enumerate(old) if b != now[lba]])
        gate2.set()
        statuses = [await kernel.wait(pid) for pid in pids]
        integrity_faults = kernel.stats.integrity_faults
    assert all(s.ok for s in statuses)
    assert seen.wrong == 0 and seen.faults
    assert set(seen.faults) == {"IntegrityFault"} and integrity_faults >= len(seen.faults)


def _failing_disk(kind: str, tmp_path: Path, trigger: Path) -> Any:
    """An nbdkit whose reads fail while ``trigger`` exists: through the error filter (EIO),
    or a shell-scripted disk that answers a read with half the bytes asked (nbdkit turns
    the short read into an error reply, never a short block)."""
    if kind == "error-filter":
        return nbdkit_server(SWAP * PAGE_SIZE, filters=["error"], plugin_args=[
            "error=EIO", "error-pread-rate=100%", f"error-pread-file={trigger}"])
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(SWAP * PAGE_SIZE))
    return nbdkit_server(plugin="eval", plugin_args=[
        f"get_size=echo {SWAP * PAGE_SIZE}",
        f"pread=if [ -e {trigger} ]; then head -c $(($3 / 2)) {disk}; "
        f"else dd if={disk} skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none; fi",
        f"pwrite=dd of={disk} seek=$4 oflag=seek_bytes conv=notrunc status=none",
        "can_write=exit 0"])


@pytest.mark.parametrize("kind", ["error-filter", "short-read"])
async def test_failing_reads_are_typed_errors_and_the_disk_can_recover(
        tmp_path: Path, kind: str) -> None:
    """While the disk fails reads, fetches fail with a typed fault; once it recovers, the
    same pages come back intact (nothing was lost or replaced)."""
    trigger = tmp_path / "fail-reads"
    seen, after = Reads(), Reads()
    gate, written = trio.Event(), trio.Event()
    async with _failing_disk(kind, tmp_path, trigger) as srv:

        async def program(proc: Process, seed: int) -> int:
            base = proc.mmap(PAGES * PAGE_SIZE)
            for page in range(PAGES):
                await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, 0))
            written.set()
            await gate.wait()
            for record, recover in ((seen, True), (after, False)):
                for page in range(PAGES):
                    try:
                        got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
                    except errors.Fault as exc:
                        record.faults.append(type(exc).__name__)
                        continue
                    record.ok += got == page_pattern(seed, page, 0)
                    record.wrong += got != page_pattern(seed, page, 0)
                if recover:
                    trigger.unlink()
            return 0

        async with boot(srv.spec) as kernel:
            pid = kernel.spawn(program, 3)
            await written.wait()
            trigger.touch()
            gate.set()
            status = await kernel.wait(pid)
            page_in_errors = kernel.stats.page_in_errors
    assert status.ok
    assert seen.wrong == after.wrong == 0
    assert seen.faults and set(seen.faults) == {"PageInError"} and page_in_errors > 0
    assert after.ok == PAGES and not after.faults  # nothing was lost


async def test_server_dying_mid_run_is_a_typed_error_and_the_rest_runs_on(
        server: NBDKit) -> None:
    seen = Reads()
    gate, written = trio.Event(), trio.Event()
    async with boot(server.spec, pager_deadline=1.0) as kernel:
        pid = kernel.spawn(writer(gate, written, seen), 4)
        await written.wait()
        server.process.kill()
        await trio.to_thread.run_sync(server.process.wait)
        gate.set()
        status = await kernel.wait(pid)
        # a domain that pages nothing is not held up by the dead disk
        other = await kernel.wait(kernel.spawn(capkern.programs.sequential, 2, 1, 1))
    assert status.state in ("exited", "failed")
    assert seen.wrong == 0 and seen.faults
    assert set(seen.faults) <= {"PageInError", "IntegrityFault", "OutOfMemory"}
    assert other.ok


@pytest.mark.parametrize("spec", ["nbd://", "nbd://host:0", "nbd://h:99999",
                                  "nbd+unix:///x", "nbd://h/x?socket=/s"])
async def test_bad_nbd_addresses_are_refused_at_boot(spec: str) -> None:
    with pytest.raises(errors.ConfigError):
        async with capkern.boot(blockdev=spec):
            pass


async def test_an_unusable_export_fails_paging_promptly_with_typed_errors() -> None:
    """An export too small for the swap area: the block device stays up and refuses each
    request (``io``), so a paging process fails with a typed fault without waiting for a
    deadline, and an IPC-only domain is untouched."""
    async with nbdkit_server(PAGE_SIZE * 4) as srv, boot(srv.spec, pager_deadline=30) as k:
        t0 = trio.current_time()
        status = await k.wait(k.spawn(capkern.programs.sequential, 12, 1, 1))
        took = trio.current_time() - t0
        other = await k.wait(k.spawn(capkern.programs.sequential, 2, 1, 1))
        blockdev = next(d for d in k.domains() if d.name == "blockdev")
        failures = k.stats.store_failures
    assert status.state == "failed" and "capkern.errors.OutOfMemory" in (status.error or "")
    assert took < 10 and failures > 0
    assert blockdev.state == "running" and other.ok


async def test_a_server_started_after_boot_is_used(tmp_path: Path) -> None:
    """The block device connects on first use: boot order does not matter."""
    sock = str(tmp_path / "late.sock")
    async with (boot(f"nbd+unix:///?socket={sock}") as kernel,
                nbdkit_server(SWAP * PAGE_SIZE, socket_path=sock)):  # started after boot
        status = await kernel.wait(kernel.spawn(capkern.programs.sequential, 12, 2, 9))
        page_ins = kernel.stats.page_ins
    assert status.ok and page_ins > 0


async def test_demo_runs_on_nbd() -> None:
    """``capkern demo --blockdev nbd://...`` pages onto the server and every property holds."""
    async with nbdkit_server("64M", tcp=True) as srv:
        out = await trio.run_process([*CAPKERN, "demo", "--quick", "--blockdev", srv.spec],
                                     capture_stdout=True, capture_stderr=True, check=False)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert srv.spec in text.replace("\n", "") and "every property held" in text


async def test_a_restarted_server_is_used_again(tmp_path: Path) -> None:
    """The server dies and comes back on the same socket with the same disk file: the
    block device reconnects and every page comes back intact."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(SWAP * PAGE_SIZE))
    sock = str(tmp_path / "nbd.sock")

    def serve() -> Any:
        return nbdkit_server(plugin="file", plugin_args=[f"file={disk}"], socket_path=sock)

    seen = Reads()
    gate, written = trio.Event(), trio.Event()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(serve())
        kernel = await stack.enter_async_context(boot(first.spec))
        pid = kernel.spawn(writer(gate, written, seen), 6)
        await written.wait()
        first.process.kill()
        await trio.to_thread.run_sync(first.process.wait)
        Path(sock).unlink(missing_ok=True)  # a crashed nbdkit leaves its socket behind
        await stack.enter_async_context(serve())
        gate.set()
        status = await kernel.wait(pid)
    assert status.ok and seen.ok == PAGES and not seen.faults and not seen.wrong


async def _read_back(proc: Process, base: int, seed: int, round_: int, seen: Any) -> None:
    """Read every page back, counting right and wrong pages and typed faults in ``seen``."""
    for page in range(PAGES):
        try:
            got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
        except errors.Fault as exc:
            seen.faults.append(type(exc).__name__)
            continue
        if got == page_pattern(seed, page, round_):
            seen.ok += 1
        else:
            seen.wrong += 1
