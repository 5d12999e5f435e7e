"""Escapes only real isolation stops: an out-of-process pager that walks its heap, reads
the kernel's /proc/<pid>/mem, blocks its interpreter, ignores cancellation, exits with
os._exit or floods its socket gains nothing and stalls only the faults that need it.

These run real child processes, so they use the real clock: few, short, and bounded by
``fail_after``; what they assert is order and outcome, not how fast.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
import trio

import capkern
from capkern import programs
from capkern._pagefmt import PAGE_SIZE
from capkern.errors import PageLost, PagerUnavailable
from capkern.testing.escape import MARKER, escape_pager

PAGES = 10


async def secret_writer(proc: capkern.Process, secrets_hex: list[str]) -> int:
    """Write one secret per page (more pages than RAM), then read them all back."""
    base = proc.mmap(len(secrets_hex) * PAGE_SIZE)
    for i, s in enumerate(secrets_hex):
        await proc.write(base + i * PAGE_SIZE, MARKER + bytes.fromhex(s))
    for i, s in enumerate(secrets_hex):
        got = await proc.read(base + i * PAGE_SIZE, len(MARKER) + 16)
        if got != MARKER + bytes.fromhex(s):
            return 99  # wrong data: never acceptable
    return 0


async def bystander(proc: capkern.Process, rounds: int) -> int:
    """Works on one resident page only: needs nothing from the pager."""
    base = proc.mmap(PAGE_SIZE)
    for i in range(rounds):
        await proc.write(base, i.to_bytes(4, "big"))
        assert await proc.read(base, 4) == i.to_bytes(4, "big")
        await trio.sleep(0)
    return 0


async def ipc_bystander(proc: capkern.Process, calls: int) -> int:
    """Calls an echo server; has no paged memory, so needs nothing of the pager."""
    for i in range(calls):
        if (await proc.call("server", "echo", i)).body["echo"] != i:
            return 1
    return 0


def _secrets() -> list[str]:
    return [secrets.token_hex(16)[:32] for _ in range(PAGES)]


def _pager(kernel: capkern.Kernel) -> capkern.DomainInfo:
    return next(d for d in kernel.domains() if d.name == "pager")


async def _escape_report(kernel: capkern.Kernel) -> dict[str, Any]:
    assert kernel.vm is not None
    stats = await kernel.vm.server_stats()
    report: dict[str, Any] = stats["pager"]["escape"]
    return report


@pytest.mark.parametrize("isolation", ["task", "process"])
async def test_heap_walk_finds_plaintext_only_in_task_mode(isolation: str) -> None:
    hexes = _secrets()
    with trio.fail_after(30):
        async with capkern.boot(ram_pages=4, isolation=isolation,
                                pager=escape_pager("heap")) as kernel:
            status = await kernel.wait(kernel.spawn(secret_writer, hexes))
            report = await _escape_report(kernel)
    assert status.ok
    assert report["scanned"] > 0
    found = {bytes(f).hex() for f in report["found"]}
    if isolation == "process":
        assert found == set()  # a child's heap holds sealed pages only
    else:
        assert found & set(hexes)  # the in-process model: the heap is the kernel's


async def test_proc_mem_of_the_kernel_is_refused() -> None:
    with trio.fail_after(30):
        async with capkern.boot(ram_pages=4, isolation="process",
                                pager=escape_pager("procmem")) as kernel:
            status = await kernel.wait(kernel.spawn(secret_writer, _secrets()))
            report = await _escape_report(kernel)
    assert status.ok
    assert report["ppid"] == os.getpid()
    assert report["mem"].startswith("refused"), report
    if os.getuid() == 0:
        assert report["uid"] != 0  # the child dropped to nobody before running the pager


async def test_blocking_sleep_stalls_only_the_faults_that_need_it() -> None:
    hexes = _secrets()
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", pager_deadline=2.0,
                                pager=escape_pager("sleep", 30)) as kernel:
            victim = kernel.spawn(secret_writer, hexes)
            # the victim's first page-in sends the pager to sleep for 30 s
            while kernel.stats.page_ins + kernel.stats.pager_timeouts == 0 and \
                    not any(d.restarts for d in kernel.domains()):
                await trio.sleep(0.01)
                if kernel.status(victim) is not None:
                    break
            ep = kernel.new_endpoint("echo")
            kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
            by = kernel.spawn(ipc_bystander, 200, caps={"server": capkern.Grant(ep, "w", 1)})
            by_status = await kernel.wait(by)
            by_done = trio.current_time()
            victim_status = await kernel.wait(victim)
            victim_done = trio.current_time()
            while not _pager(kernel).restarts:  # killed at its hang timeout
                await trio.sleep(0.05)
    assert by_status.ok
    assert by_done <= victim_done
    assert victim_status.state == "failed"
    assert "PagerUnavailable" in (victim_status.error or "") or "PageLost" in (
        victim_status.error or "")
    assert kernel.events.of_kind("hung")


async def test_os_exit_is_noticed_at_once_and_restarted() -> None:
    hexes = _secrets()
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", pager_deadline=30.0,
                                pager=escape_pager("exit", 3)) as kernel:
            while (first := _pager(kernel).os_pid) is None:
                await trio.sleep(0.01)  # the child is being started
            start = trio.current_time()
            status = await kernel.wait(kernel.spawn(secret_writer, hexes))
            took = trio.current_time() - start
            while not (pager := _pager(kernel)).restarts or pager.state != "running":
                await trio.sleep(0.01)  # the fault fails first; the restart follows
            restarts = kernel.events.of_kind("restart")
    assert status.state == "failed"
    assert ("PagerUnavailable" in (status.error or "")
            or "PageLost" in (status.error or "")), status
    assert took < 15.0  # end of stream, not the 30 s deadline
    assert pager.restarts >= 1 and pager.os_pid != first
    assert restarts


async def test_ignoring_cancellation_does_not_hold_shutdown() -> None:
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", pager_deadline=1.0,
                                pager=escape_pager("shield")) as kernel:
            await kernel.wait(kernel.spawn(secret_writer, _secrets()))
            pid = next(d for d in kernel.domains() if d.name == "pager").os_pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped with the kernel


@pytest.mark.parametrize("count", [50, -5], ids=["well-framed-garbage", "broken-framing"])
async def test_garbage_frames_are_refused_and_counted(count: int) -> None:
    hexes = _secrets()
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", pager_deadline=5.0,
                                pager=escape_pager("garbage", count)) as kernel:
            status = await kernel.wait(kernel.spawn(secret_writer, hexes))
            by = await kernel.wait(kernel.spawn(bystander, 50))
            while count < 0 and not _pager(kernel).restarts:
                await trio.sleep(0.01)  # killed for its broken stream: the restart follows
            pager = _pager(kernel)
    assert by.ok
    assert pager.frames_refused > 0
    assert kernel.stats.frames_refused >= pager.frames_refused
    if count > 0:
        assert status.ok  # garbage is skipped; the honest answers still arrive
    else:
        assert pager.restarts >= 1  # a stream out of sync is a crash
        assert status.ok or "PagerUnavailable" in (status.error or "") \
            or "PageLost" in (status.error or "")


_ = (PagerUnavailable, PageLost)
