"""The kernel side of an out-of-process server: proxy and supervisor (TRUSTED).

In the parent, an isolated server is still a protection domain with the same
capabilities; its program is :func:`isolated`'s proxy, a Trio task that exec's a fresh
interpreter (``python -m capkern.isolation._child``, never a fork of the kernel's memory)
with one end of a Unix socketpair as its only extra file descriptor, and relays frames:
every syscall the child asks for is made here, through the domain's real
:class:`~capkern._proc.Process` handle, with every kernel check.  Nothing but frames
crosses.  Frame sizes are judged before reading; a garbage frame is refused and counted.

Supervision follows MINIX 3's reincarnation server.  End of stream is noticed at once:
the call the child was serving (and any reply capability it saved) is aborted, so the
kernel's fault fails with a typed error within milliseconds, not a deadline.  A child
holding a call past ``hang_timeout`` is killed.  Then the server is restarted (back-off,
a limit), with a ``restart`` event; the pager's proxy keeps a :class:`PageLedger`, so a
page whose sealed copy died with the old process fails with ``PageLost`` for its owner.
"""

from __future__ import annotations

import ctypes
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .. import _wire as wire
from .._cspace import CapInfo
from .._ipc import Received, ReplyObject
from .._proc import Process
from .._states import DomainState, ReplyState, move
from ..errors import CapkernError, ConfigError, MalformedMessage, QueueFull, ServerCrashed
from ._framing import FrameDecoder, FrameLimits, encode_frame
from ._ledger import PageLedger
from ._messages import ASYNC_OPS, CANCELLED, POST_OPS, SYNC_OPS, encode_error
from ._spec import parse_tcp, spec_of

if TYPE_CHECKING:
    from .._domain import Domain
    from ..kernel import Kernel

__all__ = ["IsolationOptions", "RestartPolicy", "ServerGroup", "harden_kernel_process",
           "isolated", "spawn_isolated"]

MAX_INFLIGHT = 256  # blocking syscalls one child may have under way at once
_RLIMITS = ("as", "cpu", "nofile")


@dataclass(frozen=True)
class RestartPolicy:
    """How a crashed server is brought back: after ``backoff`` seconds, doubling up to
    ``backoff_max``; at most ``max_restarts`` times (then the domain ends, failed)."""

    max_restarts: int = 5
    backoff: float = 0.02
    backoff_max: float = 1.0

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff * (2 ** max(attempt - 1, 0)), self.backoff_max))


@dataclass(frozen=True)
class IsolationOptions:
    """Per-server settings of ``isolation="process"``.

    ``rlimits``: ``{"as": bytes, "cpu": seconds, "nofile": count}`` set in the child
    before any server code is imported.  ``hang_timeout``: a child holding one call
    longer than this is killed (and restarted); None = twice the pager deadline.
    """

    rlimits: Mapping[str, int] = field(default_factory=dict)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    hang_timeout: float | None = None

    def validate(self) -> None:
        for key, value in self.rlimits.items():
            if key not in _RLIMITS or type(value) is not int or value <= 0:
                raise ConfigError(f"rlimits: {key!r}={value!r}; allowed keys {_RLIMITS} "
                                  "with positive int values")
        r = self.restart
        if type(r.max_restarts) is not int or r.max_restarts < 0:
            raise ConfigError("restart.max_restarts must be an int >= 0")
        for v in (r.backoff, r.backoff_max, self.hang_timeout):
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v)
                                      and v >= 0):
                raise ConfigError("restart delays and hang_timeout must be finite >= 0")


class ServerGroup:
    """The isolated servers of one kernel: the pager's ledger, which a dying block
    device also empties (the pages stored on it died with it)."""

    def __init__(self) -> None:
        self.ledger = PageLedger()

    def lost_with(self, role: str) -> int:
        return self.ledger.crashed() if role in ("pager", "blockdev") else 0


_hardened = False


def harden_kernel_process() -> bool:
    """Make this (the kernel's) process non-dumpable, so another process of the same user
    -- an untrusted child -- cannot read its memory through ``/proc/<pid>/mem`` or
    ptrace it.  Linux only; returns whether it took effect."""
    global _hardened
    if _hardened:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_dumpable = 4
        _hardened = bool(libc.prctl(pr_set_dumpable, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
    return _hardened


def isolated(program: Any, role: str, options: IsolationOptions, group: ServerGroup,
             limits: wire.Limits, deadline: float) -> Callable[..., Any]:
    """The proxy program running ``program`` in a child process (ConfigError now if a
    fresh interpreter could not load it)."""
    address = parse_tcp(program) if isinstance(program, str) and \
        program.startswith("tcp://") else None
    if address is not None:  # the remote server runs its own pager: nothing to name
        target, factory, evidence = "remote:pager", ["program"], None  # names nothing here
    else:
        target, factory, evidence = spec_of(program, role)
    options.validate()
    hang = options.hang_timeout if options.hang_timeout is not None else 2 * deadline

    async def proxy(proc: Process, *boot_args: Any) -> int:
        harden_kernel_process()
        sup = _Supervisor(proc, role, target, factory, list(boot_args), options, group,
                          limits, hang, evidence, address)
        return await sup.run()

    proxy.__qualname__ = proxy.__name__ = f"{role}_proxy"
    return proxy


def spawn_isolated(kernel: Kernel, program: Any, *args: Any, name: str | None = None,
                   caps: Mapping[str, Any] | None = None,
                   options: IsolationOptions | None = None) -> int:
    """Spawn a server domain whose program runs in a child OS process (supervised as the
    pager is: restarted on a crash).  ``program`` must be importable by name."""
    proxy = isolated(program, "server", options or IsolationOptions(), ServerGroup(),
                     kernel.limits, kernel.config.pager_deadline)
    target = spec_of(program)[0]
    return kernel.spawn(proxy, *args, name=name or target.rsplit(".", 1)[-1].split(":")[-1],
                        caps=caps, kind="server")


class _Supervisor:
    def __init__(self, proc: Process, role: str, target: str, factory: list[Any],
                 boot_args: list[Any], options: IsolationOptions, group: ServerGroup,
                 limits: wire.Limits, hang: float, evidence: Any,
                 address: tuple[str, int] | None = None) -> None:
        self.proc = proc
        self.address = address  # a remote server (TCP) instead of a child process
        self.dom: Domain = proc._dom
        self.role = role
        self.hello = ["hello", target, factory[0], factory[1] if len(factory) > 1 else [],
                      boot_args, self.dom.name, self.dom.pid, dict(options.rlimits)]
        self.options = options
        self.group = group
        self.frame_limits = FrameLimits(max_frame=limits.max_body_bytes + 4096)
        self.hang = hang
        self.evidence = evidence
        self.dom.isolation = "process" if address is None else "remote"

    async def run(self) -> int:
        kernel = self.dom.kernel
        policy = self.options.restart
        while True:
            how, code, why = await _Session(self).run()
            if how == "exit" and code == 0 and why is None:
                return 0
            lost = self.group.lost_with(self.role)
            kernel.stats.pages_lost += lost
            if self.dom.restarts >= policy.max_restarts:
                raise ServerCrashed(f"{self.role} OS process ended ({why or f'code {code}'}); "
                                    f"{self.dom.restarts} restarts used up")
            self.dom.restarts += 1
            kernel.stats.server_restarts += 1
            self.dom.state = move(self.dom.state, DomainState.RESTARTING)
            kernel.event("restart", self.dom,
                         f"os pid {self.dom.os_pid} ended ({why or f'code {code}'}); "
                         f"{lost} pages lost; restart {self.dom.restarts}")
            await trio.sleep(policy.delay(self.dom.restarts))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class _Session:
    """One child process's life, from exec to end of stream."""

    def __init__(self, sup: _Supervisor) -> None:
        self.sup = sup
        self.proc = sup.proc
        self.dom = sup.dom
        self.decoder = FrameDecoder(sup.frame_limits)
        self.inflight: dict[int, trio.CancelScope] = {}
        self.send_lock = trio.Lock()
        self.stream: trio.SocketStream | None = None
        #: the child's socketpair end as a plain (non-blocking) socket: the send fast path
        self.raw: socket.socket | None = None
        self.process: trio.Process | None = None
        self.end: tuple[str, int | None, str | None] = ("eof", None, "end of stream")
        self.nursery: trio.Nursery | None = None
        self.held: list[tuple[float, ReplyObject]] = []  # (kill-by time, call held)

    async def run(self) -> tuple[str, int | None, str | None]:
        if self.dom.state == DomainState.RUNNING:
            # until its OS process (or connection) exists
            self.dom.state = move(self.dom.state, DomainState.STARTING)
        if self.sup.address is not None:
            host, port = self.sup.address
            try:
                with trio.fail_after(max(self.sup.hang, 1.0)):
                    self.stream = await trio.open_tcp_stream(host, port)
            except (OSError, trio.TooSlowError) as exc:
                return ("eof", None, f"cannot connect to {host}:{port}: {exc}")
            self.dom.state = move(self.dom.state, DomainState.RUNNING)
            self.dom.os_pid = None  # another host's process
            return await self.relay()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "capkern.isolation._child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("CAPKERN_CHILD_STDERR") else subprocess.DEVNULL,
                env=_child_env(), start_new_session=True)
        finally:
            theirs.close()
        self.dom.os_pid = self.process.pid
        self.dom.state = move(self.dom.state, DomainState.RUNNING)
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.raw = ours  # from_stdlib_socket made it non-blocking
        return await self.relay()

    async def relay(self) -> tuple[str, int | None, str | None]:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self.send(self.sup.hello)
                nursery.start_soon(self.read_loop)
                nursery.start_soon(self.watchdog)
        finally:
            with trio.CancelScope(shield=True):
                self.abort_calls()
                await self.reap()
        return self.end

    # -- frames -------------------------------------------------------------------------

    async def send(self, fields: list[Any]) -> None:
        assert self.stream is not None
        data = encode_frame(fields, self.sup.frame_limits)
        if self.raw is not None and not self.send_lock.locked():
            # fast path: nobody is mid-write, so a non-blocking send keeps frame order;
            # a frame the socket takes whole costs no scheduler pass (the common case)
            try:
                sent = self.raw.send(data) if self.raw is not None else 0
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.finish(("eof", None, "socket closed"))
                return
            if sent == len(data):
                return
            data = data[sent:]
        try:
            async with self.send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.finish(("eof", None, "socket closed"))

    def finish(self, end: tuple[str, int | None, str | None]) -> None:
        if self.nursery is not None and not self.nursery.cancel_scope.cancel_called:
            self.end = end
            self.nursery.cancel_scope.cancel()

    async def read_loop(self) -> None:
        assert self.stream is not None
        while True:
            try:
                chunk = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                self.finish(("eof", None, "end of stream"))
                return
            self.decoder.feed(chunk)
            while True:
                try:
                    frame = self.decoder.next_frame()
                except CapkernError as exc:
                    self.refused(str(exc))
                    if self.decoder.broken is not None:
                        self.kill(f"broken framing: {self.decoder.broken}")
                        return
                    continue
                if frame is None:
                    break
                await self.handle(frame)

    def refused(self, why: str) -> None:
        self.dom.frames_refused += 1
        self.dom.kernel.stats.frames_refused += 1
        if self.dom.frames_refused in (1, 10, 100, 1000, 10000):  # log, but not a flood
            self.dom.kernel.event("frame_refused", self.dom,
                                  f"{why} ({self.dom.frames_refused} so far)")

    def kill(self, why: str) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        self.finish(("killed", None, why))

    async def handle(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == "sys" and len(frame) == 5 and type(frame[1]) is int:
            _, rid, op, args, kwargs = frame
            if not (isinstance(op, str) and isinstance(args, list) and isinstance(kwargs, dict)
                    and set(kwargs) <= {"caps"} and (op in ASYNC_OPS or op in SYNC_OPS)):
                self.refused(f"bad syscall frame {op!r}")
                await self.send(["res", rid, 0, encode_error(MalformedMessage(
                    f"no syscall {op!r} with those arguments"))])
                return
            if op in SYNC_OPS:
                ok, value = self.sync_op(op, args, kwargs)
                await self.send(["res", rid, ok, value])
            elif len(self.inflight) >= MAX_INFLIGHT or rid in self.inflight:
                await self.send(["res", rid, 0, encode_error(QueueFull(
                    f"{MAX_INFLIGHT} blocking syscalls already under way"))])
            else:
                assert self.nursery is not None
                scope = self.inflight[rid] = trio.CancelScope()
                self.nursery.start_soon(self.async_op, scope, rid, op, args, kwargs)
        elif kind == "post" and len(frame) == 4 and frame[1] in POST_OPS \
                and isinstance(frame[2], list) and isinstance(frame[3], dict) \
                and set(frame[3]) <= {"caps"}:
            self.post(frame[1], frame[2], frame[3])
        elif kind == "cancel" and len(frame) == 2 and type(frame[1]) is int:
            cancelling = self.inflight.get(frame[1])
            if cancelling is not None:
                cancelling.cancel()
        elif kind == "note" and len(frame) == 2 and isinstance(frame[1], dict):
            self.note(frame[1])
        elif kind == "exit" and len(frame) == 3 and type(frame[1]) is int:
            error = frame[2] if isinstance(frame[2], str) else None
            self.finish(("exit", frame[1], error))
        else:
            self.refused(f"unknown frame {str(kind)[:40]!r}")

    # -- syscalls ---------------------------------------------------------------------------

    def sync_op(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[int, Any]:
        try:
            if op == "reply_to":
                self.ledger_reply_to(args)
            result = getattr(self.proc, op)(*args, **kwargs)
        except CapkernError as exc:
            return 0, encode_error(exc)
        except Exception as exc:  # bad argument types from the child: its error only
            return 0, encode_error(MalformedMessage(f"{op}: {type(exc).__name__}: {exc}"))
        if op == "caps":
            return 1, [_cap_row(c) for c in result]
        return 1, result

    async def async_op(self, scope: trio.CancelScope, rid: int, op: str, args: list[Any],
                       kwargs: dict[str, Any]) -> None:
        ok, value = 0, encode_error(MalformedMessage("cancelled"))
        with scope:
            try:
                if op == "recv":
                    ok, value = 1, await self.recv(*args)
                else:
                    got = await getattr(self.proc, op)(*args, **kwargs)
                    ok, value = 1, _msg(got, False) if isinstance(got, Received) else got
            except CapkernError as exc:
                ok, value = 0, encode_error(exc)
            except Exception as exc:
                ok, value = 0, encode_error(MalformedMessage(f"{op}: {type(exc).__name__}"))
        self.inflight.pop(rid, None)
        if scope.cancelled_caught:  # the child gave up on it, and waits for this answer
            ok, value = 0, [CANCELLED, "cancelled", "", ""]
        await self.send(["res", rid, ok, value])

    async def recv(self, slot: Any) -> list[Any]:
        """Receive for the child; the ledger answers fetches of lost pages itself."""
        ledger = self.sup.group.ledger if self.sup.role == "pager" else None
        while True:
            before = self.dom.reply
            got = await self.proc.recv(slot)
            reply = self.dom.reply if self.dom.reply is not before else None
            if self.sup.evidence is not None:
                self.sup.evidence.record(got.body)
            if ledger is not None and reply is not None:
                lost = ledger.request(got.label, got.body)
                if lost is not None:
                    self.dom.kernel.stats.page_lost_faults += 1
                    self.proc.reply_error("lost", lost)
                    continue
            if reply is not None:
                self.held.append((trio.current_time() + self.sup.hang, reply))
            return _msg(got, reply is not None)

    async def watchdog(self) -> None:
        """Kill a child that holds a call past the hang timeout (one task per session,
        not one per call: the check costs nothing on the call path)."""
        hang = self.sup.hang
        while True:
            await trio.sleep(max(hang / 4, 0.01))
            now = trio.current_time()
            live = [(t, r) for t, r in self.held if r.state in ("waiting", "gone")]
            self.held = live
            late = [r for t, r in live if t <= now]
            if late:
                self.dom.kernel.event("hung", self.dom, f"held a {late[0].request_label!r} "
                                      f"call for {hang}s; killing os pid {self.dom.os_pid}")
                self.kill(f"hung past {hang}s")
                return

    def post(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        reply = self.dom.reply
        request = reply.request_label if reply is not None else ""
        try:
            getattr(self.proc, op)(*args, **kwargs)
        except CapkernError:
            # a well-formed frame the kernel refused (out of contract, too big...): the
            # caller already has its typed error, as in-process; replies are posted, so
            # the child is not told (it learns nothing from the refusal either)
            return
        except Exception as exc:
            self.refused(f"bad {op}: {type(exc).__name__}")
            if reply is not None and reply.state == ReplyState.WAITING:
                reply.abort(f"server {self.dom.name!r} sent a malformed reply")
            return
        if self.sup.role == "pager" and len(args) >= 2:
            body = args[1]
            if op == "reply_raw":
                try:
                    body = wire.decode_untrusted(args[1], self.dom.kernel.limits)
                except CapkernError:
                    return
            self.sup.group.ledger.replied(request, args[0], body)

    def ledger_reply_to(self, args: list[Any]) -> None:
        if self.sup.role != "pager" or len(args) < 3:
            return
        try:
            slot = self.proc._slot(args[0])
            obj = self.dom.cspace.lookup(slot).obj
        except (CapkernError, TypeError):
            return
        if isinstance(obj, ReplyObject):
            self.sup.group.ledger.replied(obj.request_label, args[1], args[2])

    def note(self, report: dict[str, Any]) -> None:
        ev = self.sup.evidence
        if ev is None:
            return
        for key in ("tried", "refused"):
            counts = report.get(key)
            if isinstance(counts, dict):
                target = getattr(ev, key)
                for name, n in counts.items():
                    if isinstance(name, str) and type(n) is int:
                        target[name] = max(target[name], n)
        breaches = report.get("breaches")
        if isinstance(breaches, list):
            for b in breaches[len(ev.breaches):]:
                ev.breaches.append(str(b)[:200])

    # -- the end ------------------------------------------------------------------------------

    def abort_calls(self) -> None:
        """The child is gone: whoever waits on it gets a typed error now."""
        why = f"server {self.dom.name!r} (os pid {self.dom.os_pid}) died: {self.end[2]}"
        reply = self.dom.take_reply()
        if reply is not None:
            reply.abort(why)
        for cap in list(self.dom.cspace.caps()):
            if isinstance(cap.obj, ReplyObject):
                cap.obj.abort(why)
                try:
                    self.dom.cspace.delete(cap.slot)
                except CapkernError:
                    pass

    async def reap(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with trio.move_on_after(0.5):  # an "exit" frame: let it finish on its own
                if self.end[0] == "exit":
                    await process.wait()
            if process.returncode is None:
                process.kill()  # SIGKILL: a child cannot ignore it
        with trio.move_on_after(5):
            await process.wait()


def _msg(got: Received, has_reply: bool) -> list[Any]:
    return ["msg", got.label, got._raw, got.badge, list(got.caps), has_reply]


def _cap_row(c: CapInfo) -> list[Any]:
    return [c.slot, c.name, c.kind, c.oid, c.object_name, c.rights, c.badge,
            list(c.parent) if c.parent is not None else None]

