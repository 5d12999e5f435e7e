"""The child side of an out-of-process server (runs in the UNTRUSTED OS process).

``python -m capkern.isolation._child FD`` is exec'd by the kernel's proxy with one end of
a socket as its only extra file descriptor.  It reads the ``hello`` frame, hardens
itself (resource limits; drops to ``nobody`` if started as root) *before* importing any
server code, then runs the server program unchanged against :class:`RemoteProcess`, a
stand-in for :class:`~capkern._proc.Process` whose syscalls are frames the proxy turns
into real syscalls, with every kernel check.

Blocking syscalls wait for their answer in a Trio task; non-blocking ones (``caps``,
``copy``, ``nbsend``...) do a blocking round trip, which is fine here: the parent answers
them at once, and blocking this process blocks nobody else.  Replies are posted without
waiting (the proxy applies them with the kernel's checks; a refused reply fails the
caller there, as in-process).
"""

from __future__ import annotations

import importlib
import itertools
import os
import select
import socket
import sys
import traceback
from typing import Any, NoReturn

import trio

from .._cspace import CapInfo
from .._ipc import Received
from .._proc import ProcessExit
from ..errors import (
    CapkernError,
    ConfigError,
    ReplyError,
    SegmentationFault,
)
from ._framing import FrameDecoder, encode_frame
from ._messages import CANCELLED, decode_error
from ._spec import load_target

__all__ = ["ConnectionLost", "Link", "RemoteProcess", "main", "read_hello", "serve_link"]


class ConnectionLost(Exception):
    """The kernel's end of a remote server's connection went away."""


class Link:
    """The child's end of the socket: frames out (blocking), answers in (by id)."""

    def __init__(self, sock: socket.socket, exit_on_eof: bool = True) -> None:
        self.sock = sock
        self.exit_on_eof = exit_on_eof  # a child exits; a remote server serves the next
        self.sock.setblocking(False)
        self.decoder = FrameDecoder()
        self.ids = itertools.count(1)
        self.answers: dict[int, list[Any]] = {}
        self.waiting: dict[int, trio.Event] = {}
        self.closed = False

    def send(self, fields: list[Any], prefix: bytes = b"") -> None:
        """Send one frame (after ``prefix``, frames already encoded: one write, so the
        kernel's proxy wakes once for a reply and the next receive)."""
        data = memoryview(prefix + encode_frame(fields))
        while data:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                select.select([], [self.sock], [])
                continue
            except OSError:
                self.lost()
            data = data[n:]

    def lost(self) -> NoReturn:
        if self.exit_on_eof:
            os._exit(0)  # the kernel is gone (or killed us): nothing left to serve
        self.closed = True
        for event in self.waiting.values():  # nobody waits for an answer that cannot come
            event.set()
        self.waiting.clear()
        raise ConnectionLost("the kernel closed the connection")

    def pump(self) -> None:
        """Read what is there (never blocks) and file each answer under its id."""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.lost()
            self.decoder.feed(chunk)
            for frame in self.decoder.frames():
                if frame[0] == "res" and len(frame) == 4 and isinstance(frame[1], int):
                    self.answers[frame[1]] = frame
                    event = self.waiting.pop(frame[1], None)
                    if event is not None:
                        event.set()

    def call_sync(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        rid = next(self.ids)
        self.send(["sys", rid, op, args, kwargs])
        while rid not in self.answers:
            if self.closed:
                raise ConnectionLost("the kernel closed the connection")
            select.select([self.sock], [], [])
            self.pump()
        return _result(self.answers.pop(rid))

    async def call(self, op: str, args: list[Any], kwargs: dict[str, Any],
                   prefix: bytes = b"") -> Any:
        if self.closed:
            raise ConnectionLost("the kernel closed the connection")
        rid = next(self.ids)
        event = self.waiting[rid] = trio.Event()
        self.send(["sys", rid, op, args, kwargs], prefix)
        try:
            await event.wait()
            if rid not in self.answers:
                raise ConnectionLost("the kernel closed the connection")
        except trio.Cancelled:
            # as in-process: a syscall refused by its checks raises that error, and one
            # that completed before the cancellation took effect keeps its result (a
            # received message is never lost).  The proxy answers a cancel at once.
            if rid not in self.answers and not self.closed:
                self.send(["cancel", rid])
                with trio.CancelScope(shield=True):
                    await event.wait()
            if rid not in self.answers:
                raise
            answer = self.answers.pop(rid)
            if not answer[2] and isinstance(answer[3], list) and answer[3][:1] == [CANCELLED]:
                raise
            return _result(answer)
        return _result(self.answers.pop(rid))

    async def reader(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            self.pump()


def _result(frame: list[Any]) -> Any:
    if not frame[2]:
        raise decode_error(frame[3])
    return frame[3]


class RemoteProcess:
    """The syscall handle of a server running in a child process (same API as
    :class:`~capkern._proc.Process` for what a server uses)."""

    def __init__(self, link: Link, pid: int, name: str,
                 local: dict[str, Any] | None = None) -> None:
        self._link = link
        self._pid = pid
        self._name = name
        self._caller = False  # a call received and not yet answered
        #: slot name -> ``async (label, body) -> Received``: servers in this same process
        #: (a remote pager's own block device), called without crossing to the kernel
        self._local = local or {}

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<RemoteProcess pid={self.pid} {self.name!r} os_pid={os.getpid()}>"

    def exit(self, code: int = 0) -> NoReturn:
        raise ProcessExit(int(code))

    # -- received messages --------------------------------------------------------------

    def _received(self, value: Any) -> Received:
        _, label, raw, badge, caps, has_reply = value
        self._caller = bool(has_reply)
        return Received.lazy(label, raw, badge, tuple(caps))

    # -- capabilities -------------------------------------------------------------------

    def slot(self, name: str) -> int:
        return int(self._link.call_sync("slot", [name], {}))

    def name_slot(self, slot: int | str, name: str) -> None:
        self._link.call_sync("name_slot", [slot, name], {})

    def caps(self) -> list[CapInfo]:
        out = []
        for row in self._link.call_sync("caps", [], {}):
            row[7] = tuple(row[7]) if row[7] is not None else None
            out.append(CapInfo(*row))
        return out

    def new_endpoint(self, name: str = "", contract: Any = None) -> int:
        if contract is not None:
            raise ConfigError("a contract cannot cross to the kernel from a child process")
        return int(self._link.call_sync("new_endpoint", [name], {}))

    def new_notification(self, name: str = "") -> int:
        return int(self._link.call_sync("new_notification", [name], {}))

    def copy(self, slot: int | str, rights: str = "rwg", name: str = "") -> int:
        return int(self._link.call_sync("copy", [slot, _rights(rights), name], {}))

    def mint(self, slot: int | str, rights: str, badge: int, name: str = "") -> int:
        return int(self._link.call_sync("mint", [slot, _rights(rights), badge, name], {}))

    def move(self, slot: int | str, dest: int | None = None) -> int:
        return int(self._link.call_sync("move", [slot, dest], {}))

    def delete(self, slot: int | str) -> None:
        self._link.call_sync("delete", [slot], {})

    async def revoke(self, slot: int | str) -> int:
        return int(await self._link.call("revoke", [slot], {}))

    # -- IPC ------------------------------------------------------------------------------

    @staticmethod
    def _caps(caps: Any) -> dict[str, Any]:
        return {"caps": list(caps)} if caps else {}

    async def send(self, slot: int | str, label: str, body: Any = None, *,
                   caps: Any = ()) -> None:
        await self._link.call("send", [slot, label, body], self._caps(caps))

    def nbsend(self, slot: int | str, label: str, body: Any = None, *, caps: Any = ()) -> bool:
        return bool(self._link.call_sync("nbsend", [slot, label, body], self._caps(caps)))

    async def call(self, slot: int | str, label: str, body: Any = None, *,
                   caps: Any = ()) -> Received:
        local = self._local.get(slot) if isinstance(slot, str) else None
        if local is not None:
            return await local(label, body)  # type: ignore[no-any-return]
        got = await self._link.call("call", [slot, label, body], self._caps(caps))
        return self._received_reply(got)

    async def send_raw(self, slot: int | str, label: str, raw: bytes, *, caps: Any = ()) -> None:
        await self._link.call("send_raw", [slot, label, raw], self._caps(caps))

    async def call_raw(self, slot: int | str, label: str, raw: bytes, *,
                       caps: Any = ()) -> Received:
        got = await self._link.call("call_raw", [slot, label, raw], self._caps(caps))
        return self._received_reply(got)

    @staticmethod
    def _received_reply(value: Any) -> Received:
        _, label, raw, badge, caps, _has_reply = value
        return Received.lazy(label, raw, badge, tuple(caps))

    async def recv(self, slot: int | str) -> Received:
        return self._received(await self._link.call("recv", [slot], {}))

    def _take_caller(self) -> None:
        if not self._caller:
            raise ReplyError(f"{self.name!r} has no caller to reply to")
        self._caller = False

    def reply(self, label: str = "ok", body: Any = None, *, caps: Any = ()) -> bool:
        self._take_caller()
        self._link.send(["post", "reply", [label, body], self._caps(caps)])
        return True

    def reply_raw(self, label: str, raw: bytes) -> bool:
        self._take_caller()
        self._link.send(["post", "reply_raw", [label, raw], {}])
        return True

    def reply_error(self, reason: str, detail: str = "") -> bool:
        return self.reply("error", {"reason": reason, "detail": detail})

    async def reply_recv(self, slot: int | str, label: str = "ok", body: Any = None, *,
                         caps: Any = ()) -> Received:
        prefix = b""
        if self._caller:
            self._take_caller()
            prefix = encode_frame(["post", "reply", [label, body], self._caps(caps)])
        return self._received(await self._link.call("recv", [slot], {}, prefix))

    def save_caller(self, name: str = "") -> int:
        self._take_caller()
        return int(self._link.call_sync("save_caller", [name], {}))

    def reply_to(self, slot: int | str, label: str = "ok", body: Any = None, *,
                 caps: Any = ()) -> bool:
        return bool(self._link.call_sync("reply_to", [slot, label, body], self._caps(caps)))

    # -- memory: a server has no address space ----------------------------------------------

    def mmap(self, length: int, rights: str = "rw", addr: int | None = None) -> int:
        raise SegmentationFault(f"{self.name!r} has no address space")

    def munmap(self, addr: int, length: int) -> None:
        raise SegmentationFault(f"{self.name!r} has no address space")

    async def read(self, addr: int, n: int) -> bytes:
        raise SegmentationFault(f"{self.name!r} has no address space")

    async def write(self, addr: int, data: bytes) -> None:
        raise SegmentationFault(f"{self.name!r} has no address space")

    # -- notifications ----------------------------------------------------------------------

    def signal(self, slot: int | str) -> None:
        self._link.call_sync("signal", [slot], {})

    def poll(self, slot: int | str) -> int:
        return int(self._link.call_sync("poll", [slot], {}))

    async def wait(self, slot: int | str) -> int:
        return int(await self._link.call("wait", [slot], {}))

    # -- evidence (attacker kit) ---------------------------------------------------------------

    def note(self, report: dict[str, Any]) -> None:
        """Send the experimenter a report (counters of what an attacker tried)."""
        self._link.send(["note", report])


def _rights(rights: Any) -> Any:
    return rights if isinstance(rights, str) else str(getattr(rights, "short", lambda: rights)())


def _harden(limits: dict[str, Any], target: Any = None) -> None:
    """Before any server code runs: resource limits, then drop root.

    A server shipped with capkern (``capkern.*``: the default pager and disk, the kit's
    attackers) is imported first, as root: its code is the kernel's own distribution and
    only what it *does* once serving is untrusted.  Any other module is imported after
    the drop, so its top-level code already runs as ``nobody`` -- which then needs read
    access to the interpreter and the module (not so for a Python under ``/root``).
    """
    import resource

    if isinstance(target, str) and target.startswith("capkern.") and ":" in target:
        importlib.import_module(target.split(":", 1)[0])

    names = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU,
             "nofile": resource.RLIMIT_NOFILE}
    for key, value in limits.items():
        if key in names and isinstance(value, int) and value > 0:
            resource.setrlimit(names[key], (value, value))
    if os.getuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)


async def _serve(link: Link, hello: list[Any],
                 local: dict[str, Any] | None = None) -> tuple[int, str | None]:
    _, target, mode, factory, boot_args, name, pid, _limits = hello
    proc = RemoteProcess(link, pid, name, local)
    code = 0
    error: str | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.reader)
            obj = load_target(target)
            program = obj(*factory) if mode == "factory" else obj
            try:
                rv = await program(proc, *boot_args)
                code = rv if type(rv) is int else 0
            finally:
                nursery.cancel_scope.cancel()
    except ProcessExit as exc:
        code = exc.code
    except SystemExit as exc:
        code = exc.code if type(exc.code) is int else 1
    except BaseException as exc:  # the program's failure is reported, then we exit
        leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        error = "; ".join("".join(traceback.format_exception_only(type(e), e)).strip()
                          for e in leaves)[:1000]
        code = 1
    return code, error


def read_hello(link: Link) -> list[Any] | None:
    """Block until the kernel's ``hello`` frame; None if the stream ends or is not one."""
    sock = link.sock
    while True:  # the first frame is the hello
        select.select([sock], [], [])
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        link.decoder.feed(chunk)
        try:
            hello = link.decoder.next_frame()
        except CapkernError:
            return None
        if hello is not None:
            break
    if hello[0] != "hello" or len(hello) != 8:
        return None
    for frame in link.decoder.frames():  # answers can only follow our own requests
        del frame
    return hello


def serve_link(link: Link, hello: list[Any],
               local: dict[str, Any] | None = None) -> tuple[int, str | None]:
    """Run the program ``hello`` names over ``link`` until it ends or the link is lost."""
    try:
        return trio.run(_serve, link, hello, local)
    except ConnectionLost as exc:
        return 1, str(exc)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    link = Link(sock)
    hello = read_hello(link)
    if hello is None:
        os._exit(2)
    _harden(hello[7] if isinstance(hello[7], dict) else {}, hello[1])
    profile = os.environ.get("CAPKERN_CHILD_PROFILE")
    if profile:  # a developer's aid: where does the child spend its time?
        import cProfile

        prof = cProfile.Profile()
        code, error = prof.runcall(serve_link, link, hello)
        prof.dump_stats(f"{profile}.{os.getpid()}")
    else:
        code, error = trio.run(_serve, link, hello)
    try:
        link.send(["exit", code, error])
    except CapkernError:
        link.send(["exit", code, (error or "")[:200]])
    sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
