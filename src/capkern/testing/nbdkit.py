"""Run a real NBD server (Debian's ``nbdkit``) for tests, benchmarks and demos (UNTRUSTED).

``async with nbdkit_server("64M") as spec:`` starts ``nbdkit`` in the foreground on a
Unix socket (or on loopback TCP with ``tcp=True``), waits until it accepts connections
and yields the ``--blockdev`` spec to reach it; leaving the block terminates it.  The
server is a child process that dies with us (``--exit-with-parent``), so nothing
outlives the block even if the test crashes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

__all__ = ["NBDKit", "NBDKitUnavailable", "nbdkit_path", "nbdkit_server"]

_READY_TIMEOUT = 10.0
_STOP_GRACE = 0.5


class NBDKitUnavailable(RuntimeError):
    """``nbdkit`` is not installed, or would not start."""


@dataclass(frozen=True)
class NBDKit:
    """A running nbdkit: ``spec`` is the ``--blockdev`` address, ``process`` the child."""

    spec: str
    process: subprocess.Popen[bytes]

    def __str__(self) -> str:
        return self.spec


def nbdkit_path() -> str | None:
    """The ``nbdkit`` executable, or None if it is not installed."""
    return shutil.which("nbdkit")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(cmd: list[str], log: str) -> subprocess.Popen[bytes]:
    """Start nbdkit from the calling (event loop) thread: ``--exit-with-parent`` ties the
    server's life to the thread that forked it, and a worker thread may end any time.
    Its messages go to the file ``log`` (a pipe nobody reads could fill and stall it)."""
    with open(log, "wb") as err:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)


def _ready(proc: subprocess.Popen[bytes], pidfile: str, log: str) -> None:
    """Block (in a worker thread, real time, so an autojump test clock cannot time it out
    early) until nbdkit wrote its pid file: it is then listening."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                err = f.read(500)
            raise NBDKitUnavailable(f"nbdkit exited with status {proc.returncode}: {err}")
        try:
            with open(pidfile) as f:
                if f.read().strip():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise NBDKitUnavailable(f"nbdkit did not start within {_READY_TIMEOUT} s")


@asynccontextmanager
async def nbdkit_server(size: str | int = "64M", *, plugin: str = "memory",
                        plugin_args: Sequence[str] = (), filters: Sequence[str] = (),
                        tcp: bool = False, export: str = "",
                        socket_path: str | None = None) -> AsyncIterator[NBDKit]:
    """Serve ``plugin`` (default: a fresh in-memory disk of ``size``) for the block.

    ``filters`` are nbdkit filter names (``"error"``, ``"delay"``...) whose settings go in
    ``plugin_args`` as ``key=value``.  Yields an :class:`NBDKit` whose ``spec`` is
    ``nbd+unix:///EXPORT?socket=PATH`` or, with ``tcp``, ``nbd://127.0.0.1:PORT/EXPORT``.
    ``socket_path`` fixes the Unix socket's path (to restart a server where it was).
    Raises :class:`NBDKitUnavailable` when nbdkit is missing or fails to start.
    """
    exe = nbdkit_path()
    if exe is None:
        raise NBDKitUnavailable("nbdkit is not installed (Debian: apt-get install nbdkit)")
    with tempfile.TemporaryDirectory(prefix="capkern-nbd-") as tmp:
        pidfile = os.path.join(tmp, "pid")
        cmd = [exe, "-f", "--exit-with-parent", "-P", pidfile]
        if tcp:
            port = _free_port()
            cmd += ["-i", "127.0.0.1", "-p", str(port)]
            spec = f"nbd://127.0.0.1:{port}/{export}"
        else:
            sock = socket_path or os.path.join(tmp, "sock")
            cmd += ["-U", sock]
            spec = f"nbd+unix:///{export}?socket={sock}"
        cmd += [f"--filter={f}" for f in filters]
        cmd += [plugin, *([f"size={size}"] if plugin == "memory" else []), *plugin_args]
        log = os.path.join(tmp, "log")
        proc = _spawn(cmd, log)
        try:
            await trio.to_thread.run_sync(_ready, proc, pidfile, log)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_reap, proc)
            raise
        try:
            yield NBDKit(spec, proc)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_reap, proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and wait for it, in real time: SIGTERM, then SIGKILL after
    ``_STOP_GRACE`` (nbdkit waits for its clients to hang up before exiting on SIGTERM,
    and a kernel still booted on it is such a client)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
