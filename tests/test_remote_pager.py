"""Remote pagers over TCP (loopback only): ``capkern serve pager --listen`` and
``boot(pager="tcp://HOST:PORT")``.  The wire carries sealed pages and opaque handles
only; a lost connection is a crash: the kernel reconnects, and pages that lived on the
old server fail with ``PageLost`` for their owner only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import capkern
from capkern import programs
from capkern.errors import ConfigError
from capkern.isolation import IsolationOptions, RestartPolicy
from capkern.isolation._spec import parse_tcp


@asynccontextmanager
async def pager_server(port: int = 0) -> AsyncIterator[tuple[trio.Process, int]]:
    """``capkern serve pager`` on loopback; yields the process and its port."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "capkern", "serve", "pager", "--listen",
         f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "serve exited before listening"
                line += chunk
        yield proc, int(line.decode().rsplit(":", 1)[1])
    finally:
        proc.kill()
        with trio.move_on_after(10):
            await proc.wait()


async def test_remote_pager_pages_and_sees_no_plaintext() -> None:
    async with pager_server() as (_server, port):
        with trio.fail_after(60):
            async with capkern.boot(ram_pages=4, pager=f"tcp://127.0.0.1:{port}") as kernel:
                statuses = [await kernel.wait(kernel.spawn(programs.sequential, 12, 2, s))
                            for s in range(2)]
                pager = next(d for d in kernel.domains() if d.name == "pager")
    assert all(s.ok for s in statuses)
    assert kernel.stats.page_ins > 0 and kernel.stats.integrity_faults == 0
    assert pager.isolation == "remote" and pager.os_pid is None


async def test_lost_connection_reconnects_and_only_owners_lose_pages() -> None:
    options = IsolationOptions(restart=RestartPolicy(max_restarts=200, backoff=0.05,
                                                     backoff_max=0.2))
    async with pager_server() as (server, port):
        with trio.fail_after(90):
            async with capkern.boot(ram_pages=4, pager=f"tcp://127.0.0.1:{port}",
                                    isolation_options=options) as kernel:
                first = await kernel.wait(kernel.spawn(programs.sequential, 12, 1, 1))
                server.kill()  # the far-memory host goes away...
                await server.wait()
                async with pager_server(port):  # ...and comes back on the same port
                    while not next(d for d in kernel.domains()
                                   if d.name == "pager").restarts:
                        await trio.sleep(0.02)
                    later = await kernel.wait(kernel.spawn(programs.sequential, 12, 2, 2))
                events = kernel.events.of_kind("restart")
    assert first.ok and later.ok
    assert events and events[0].domain == "pager"


@pytest.mark.parametrize("url", ["tcp://", "tcp://host", "tcp://host:0", "tcp://host:x",
                                 "tcp://:80", "tcp://h:70000"])
async def test_bad_remote_addresses_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_tcp(url)
    with pytest.raises(ConfigError):
        async with capkern.boot(pager=url):
            pass
