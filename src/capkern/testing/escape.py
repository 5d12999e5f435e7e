"""Pagers that try to escape the mesh the way real untrusted code would (UNTRUSTED).

The attackers of :mod:`.attackers` play by the rule that a domain uses only its handle.
These do not: they walk the interpreter's heap, read the kernel's memory through
``/proc``, block the whole interpreter, refuse to be cancelled, kill their own process,
or write garbage straight into their socket.  In ``isolation="task"`` some of them win
(that mode is a model, not a protection); in ``isolation="process"`` they gain nothing
and stall nothing but the faults that need them.

Each is an honest :class:`Pager` plus one misdeed, built by a module-level factory (so
a child process can load it by name) and reports what it found through the contract's
``stats`` reply -- the in-band channel every pager already has.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from typing import Any

import trio

from .._proc import Process
from ..isolation import ServerSpec
from ..servers.pager import Pager, make_policy

__all__ = ["escape_pager"]

MARKER = b"CAPKERN-SECRET:"


class _Escaper(Pager):
    def __init__(self, proc: Process, policy_name: str, how: str, arg: Any) -> None:
        super().__init__(proc, make_policy(policy_name))
        self.how = how
        self.arg = arg
        self.report: dict[str, Any] = {"how": how, "os_pid": os.getpid(), "tried": 0}
        self.done = False
        if how == "limits":
            import resource

            self.report["rlimits"] = {
                name: resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[0]
                for name in ("as", "cpu", "nofile")}

    async def on_stats(self, body: Any) -> Any:
        out = await super().on_stats(body)
        return {**out, "escape": self.report}

    async def on_store(self, body: Any) -> Any:
        reply = await super().on_store(body)
        if self.how == "heap" and not self.done:
            self.done = True
            self.report.update(walk_heap())
        elif self.how == "procmem" and not self.done:
            self.done = True
            self.report.update(read_parent_memory())
        return reply

    async def on_fetch(self, body: Any) -> Any:
        self.report["tried"] += 1
        if self.how == "sleep":
            time.sleep(float(self.arg))  # blocks this whole interpreter
        elif self.how == "shield":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()
        elif self.how == "exit":
            os._exit(int(self.arg))
        elif self.how == "garbage":
            flood_socket(self.proc, int(self.arg))
        return await super().on_fetch(body)


def walk_heap() -> dict[str, Any]:
    """Look through every object this interpreter can reach for page plaintext (bytes
    after :data:`MARKER`).  In the kernel's interpreter that finds RAM; in a child it
    finds only sealed pages."""
    found: set[bytes] = set()
    scanned = 0
    seen: set[int] = set()
    for obj in gc.get_objects():
        for ref in (obj, *gc.get_referents(obj)):
            if id(ref) in seen or not isinstance(ref, bytes | bytearray):
                continue
            seen.add(id(ref))
            scanned += 1
            data = bytes(ref)
            at = data.find(MARKER)
            while at >= 0:
                tail = data[at + len(MARKER) : at + len(MARKER) + 16]
                if len(tail) == 16:
                    found.add(tail)
                at = data.find(MARKER, at + 1)
    return {"scanned": scanned, "found": sorted(found)}


def read_parent_memory() -> dict[str, Any]:
    """Try to read the kernel's memory through ``/proc/<ppid>/mem``."""
    ppid = os.getppid()
    out: dict[str, Any] = {"ppid": ppid, "uid": os.getuid()}
    try:
        with open(f"/proc/{ppid}/maps") as maps:
            first = maps.readline().split()[0]
        start = int(first.split("-")[0], 16)
        out["maps"] = "read"
    except OSError as exc:
        out["maps"] = f"refused: {type(exc).__name__}"
        start = 0
    try:
        with open(f"/proc/{ppid}/mem", "rb") as mem:
            mem.seek(start)
            out["mem"] = f"read {len(mem.read(4096))} bytes"
    except OSError as exc:
        out["mem"] = f"refused: {type(exc).__name__}"
    return out


def flood_socket(proc: Any, count: int) -> None:
    """Write well-framed garbage straight into this child's socket, then (when
    ``count`` is negative) a frame length no proxy will buffer."""
    link = getattr(proc, "_link", None)
    if link is None:
        return  # in-process: there is no socket to flood
    junk = [b"\x00\x00\x00\x03\xc1\xc1\xc1", b"\x00\x00\x00\x01\x90", b"\x00\x00\x00\x02\x91\x01"]
    for i in range(abs(count)):
        _send(link, junk[i % len(junk)])
    if count < 0:
        _send(link, b"\x7f\xff\xff\xff" + b"x" * 64)


def _send(link: Any, data: bytes) -> None:
    import select

    view = memoryview(data)
    while view:
        try:
            n = link.sock.send(view)
        except BlockingIOError:
            select.select([], [link.sock], [])
            continue
        view = view[n:]


def build_escape_pager(how: str, arg: Any = None) -> Any:
    """The escaping pager program (a child process loads it by this name)."""

    async def escaping_pager(proc: Process, policy_name: str = "clock") -> None:
        await _Escaper(proc, policy_name, how, arg).serve()

    return escaping_pager


def escape_pager(how: str, arg: Any = None) -> ServerSpec:
    """A pager that tries one escape: ``heap`` (walk its heap for plaintext),
    ``procmem`` (read the kernel's ``/proc/<pid>/mem``), ``sleep`` (``time.sleep(arg)``
    in a fetch), ``shield`` (ignore cancellation and SIGTERM in a fetch), ``exit``
    (``os._exit(arg)`` in a fetch), ``garbage`` (``arg`` garbage frames into its socket
    per fetch; negative: then a frame too long to read); ``limits`` (honest; reports its
    resource limits)."""
    if how not in ("heap", "procmem", "sleep", "shield", "exit", "garbage", "limits"):
        raise ValueError(f"unknown escape {how!r}")
    return ServerSpec("capkern.testing.escape:build_escape_pager", (how, arg))
