"""Shared test helpers, one copy of each.

- driving the real ``capkern`` command: a pseudo-terminal and piped stdin;
- a bare kernel's programs: an echo server;
- the system servers in their own domains on contracted endpoints, driven by a client
  domain as the kernel (or the pager) would drive them.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process, RootCap
from capkern._cspace import Rights
from capkern._pagefmt import PAGE_SIZE
from capkern._protocols import BLOCKDEV, CRYPT, PAGER
from capkern.errors import ServerError
from capkern.kernel import Kernel
from capkern.servers.blockdev import BlockBackend, serve_backend
from capkern.servers.crypt._server import crypt_server
from capkern.servers.pager import FIFOPolicy, Pager

CAPKERN = [sys.executable, "-m", "capkern"]


def read_until(fd: int, needle: bytes, timeout: float = 30.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf:
        left = end - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; screen so far:\n{buf.decode()}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


@contextmanager
def repl_in_a_pty(*args: str) -> Iterator[int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on a real terminal
        os.execv(sys.executable, [*CAPKERN, "repl", *args])
    try:
        read_until(fd, b">>> ")
        yield fd
        os.write(fd, b"\x04")  # Ctrl-D: clean shutdown
        read_until(fd, b"shutting down")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def run_repl(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAPKERN, "repl", *args], input=script, capture_output=True,
                          text=True, timeout=120)


def ctrl_c(fd: int, settle: float = 0.5) -> None:
    """Press Ctrl-C, as a person would: not within microseconds of the last echo.

    CPython's readline loop checks for signals only when its ``select`` is interrupted;
    a SIGINT that lands between echoing a character and re-entering ``select`` is noticed
    only at the next key press (the plain ``python`` prompt behaves the same).  A loaded
    machine widens that window, so the press waits for the prompt to settle.
    """
    time.sleep(settle)
    os.write(fd, b"\x03")


BOOT_ID = bytes(range(16))


Client = Callable[[Process], Awaitable[Any]]


async def _run_client(kernel: Kernel, caps: dict[str, RootCap], fn: Client) -> Any:
    """Run ``fn(proc)`` in a fresh client domain holding ``caps`` (write right only)."""
    out: list[Any] = []

    async def client(proc: Process) -> None:
        out.append(await fn(proc))

    pid = kernel.spawn(client, name="client",
                       caps={n: Grant(c, Rights.WRITE) for n, c in caps.items()})
    with trio.fail_after(600):  # on the autojump clock: a hang fails at once, not slowly
        status = await kernel.wait(pid)
    assert status.state == "exited", status
    return out[0]


def _alive(kernel: Kernel, name: str) -> bool:
    return any(d.name == name and d.state == "running" for d in kernel.domains())


def _start_crypt(kernel: Kernel, cipher: str = "aes-256-gcm") -> RootCap:
    ep = kernel.new_endpoint("crypt", CRYPT)
    kernel.spawn(crypt_server, cipher, BOOT_ID, name="crypt", kind="server",
                 caps={"service": Grant(ep, Rights.READ)})
    return ep


def _start_blockdev(kernel: Kernel, backend: BlockBackend) -> RootCap:
    ep = kernel.new_endpoint("blockdev", BLOCKDEV)

    async def program(proc: Process) -> None:
        await serve_backend(proc, backend)

    kernel.spawn(program, name="blockdev", kind="server",
                 caps={"service": Grant(ep, Rights.READ)})
    return ep


def _start_pager(kernel: Kernel, backend: BlockBackend) -> RootCap:
    disk = _start_blockdev(kernel, backend)
    ep = kernel.new_endpoint("pager", PAGER)

    async def program(proc: Process) -> None:
        await Pager(proc, FIFOPolicy()).serve()

    kernel.spawn(program, name="pager", kind="server",
                 caps={"service": Grant(ep, Rights.READ), "blockdev": Grant(disk, Rights.WRITE)})
    return ep


def _blob(seed: int) -> bytes:
    """A stand-in for a sealed page (the pager cannot tell it from a real one)."""
    return bytes([seed % 256]) * 12 + bytes([(seed * 7 + 1) % 256]) * PAGE_SIZE \
        + bytes([(seed * 13 + 5) % 256]) * 16


async def _call(proc: Process, label: str, body: Any, slot: str = "svc") -> Any:
    return (await proc.call(slot, label, body)).ok()


async def _reason(proc: Process, label: str, body: Any, slot: str = "svc") -> str:
    with pytest.raises(ServerError) as info:
        await _call(proc, label, body, slot)
    return info.value.reason


async def forever(proc: Process) -> None:
    await trio.sleep_forever()


async def forever_recv(proc: Process) -> None:
    await proc.recv("service")


async def echo(proc: Process) -> None:
    """Answers every call on 'service' with the body and the caller's badge."""
    msg = await proc.recv("service")
    while True:
        msg = await proc.reply_recv(
            "service", "ok", {"label": msg.label, "body": msg.body, "badge": msg.badge}
        )


def start_echo(k: capkern.Kernel, name: str = "echo") -> capkern.RootCap:
    ep = k.new_endpoint(name)
    k.spawn(echo, name=name, caps={"service": Grant(ep, "r")})
    return ep


async def start_server(kernel: capkern.Kernel, server: Callable[[Process], Any],
                       contract: Any = None, rights: str = "r") -> tuple[RootCap, int]:
    """Spawn ``server`` with a new endpoint "svc" in its slot "service" (``rights``), and
    let it reach its first receive: the endpoint (to hand to clients) and its pid."""
    ep = kernel.new_endpoint("svc", contract)
    pid = kernel.spawn(server, name="server", kind="server",
                       caps={"service": Grant(ep, rights)})
    await trio.testing.wait_all_tasks_blocked()
    return ep, pid
