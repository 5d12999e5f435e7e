"""Driving the real ``capkern`` command from tests: a pseudo-terminal and piped stdin."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

CAPKERN = [sys.executable, "-m", "capkern.cli"]


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
