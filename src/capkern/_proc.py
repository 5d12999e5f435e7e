"""The ``Process`` handle: a domain's only way to touch the world (its syscalls).

Every method is a trap into kernel code running on the caller's own task.  A domain
names kernel objects only by slot index (or a slot's name) in its own CSpace; the
handle holds no reference a program could use to reach another domain's objects.
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from . import _ipc as ipc
from . import _notify, _reply
from ._contract import Contract, check_schema
from ._cspace import Cap, CapInfo, Rights, begin_revoke, end_revoke, revoke_some
from ._inplace import Answer, Offer, Refused
from ._ipc import Endpoint, Received, ReplyObject
from ._notify import Notification
from .errors import (
    CapkernError,
    ConfigError,
    InvalidSlot,
    MalformedMessage,
    ProcessError,
    ReplyError,
    SegmentationFault,
)

if TYPE_CHECKING:
    from ._domain import Domain
    from .mmu._vm import VM

__all__ = ["Process", "ProcessExit", "SlotRef", "check_name", "check_object_args",
           "check_program", "revoke"]

SlotRef = int | str
"""A slot index in the caller's CSpace, or the name given to a slot."""


def check_name(name: Any, what: str = "name") -> None:
    """Names of slots and objects are strings (they show up in ``kernel.dump()``)."""
    if type(name) is not str:
        raise ConfigError(f"{what} must be a str, not {type(name).__name__}")


def check_object_args(name: Any, contract: Any) -> None:
    check_name(name, "object name")
    if contract is not None:
        check_schema(contract)


def _check_offer(offer: object) -> None:
    """An offer (``recv``/``reply_recv``'s) is one :meth:`Process.offer` made: the kernel
    calls its answer at other domains' traps, so nothing else stands in for it."""
    if type(offer) is not Offer:
        raise ConfigError(f"offer must be made by Process.offer, not a {type(offer).__name__}")


def check_program(program: Any, args: Sequence[Any]) -> None:
    """Refuse now, with a :class:`ConfigError`, a program that ``program(proc, *args)``
    would reject at its first line: the arguments must bind to its signature (after the
    ``proc`` handle).  A callable without a signature is taken on trust."""
    try:
        signature = inspect.signature(program)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, *args)
    except TypeError as exc:
        name = getattr(program, "__name__", repr(program))
        raise ConfigError(f"bad arguments for program {name}: {exc}") from None


def _int_arg(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ConfigError(f"{what} must be an int, not {type(value).__name__} {value!r}")
    return value


def _length(value: Any) -> int:
    """A length is a non-negative int (an address outside the address space, negative
    or too big, is the fault path's :class:`SegmentationFault`, as on hardware)."""
    if _int_arg(value, "length") < 0:
        raise ConfigError(f"length must not be negative, not {value}")
    return int(value)


def _data(value: Any) -> bytes:
    """Bytes to write: bytes-like only (a str must be encoded, an int is not a length)."""
    if isinstance(value, str):
        raise ConfigError("write needs bytes, not str: encode it first "
                          f"(e.g. {value[:20]!r}.encode())")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ConfigError(f"write needs bytes-like data, not {type(value).__name__}")
    return bytes(value)


_READ, _WRITE = Rights.READ, Rights.WRITE  # looked up once: enum attributes are slow


REVOKE_STEP = 1024
"""Capabilities a revoke removes between two checkpoints (about a millisecond)."""


async def revoke(cap: Cap) -> int:
    """Remove every descendant of ``cap``, ``REVOKE_STEP`` at a time with a checkpoint
    between steps, so no revoke holds the kernel for more than about a millisecond
    however large the derivation tree (seL4's preemptible revoke).  While it runs,
    nothing can be derived from the capabilities it is removing; it is shielded from
    cancellation, so a revoke once started always completes."""
    removed = revoke_some(cap, REVOKE_STEP)
    if cap.children:
        begin_revoke(cap)
        try:
            with trio.CancelScope(shield=True):
                while cap.children:
                    await trio.sleep(0)
                    removed += revoke_some(cap, REVOKE_STEP)
        finally:
            end_revoke(cap)
    else:
        await trio.lowlevel.cancel_shielded_checkpoint()
    return removed


class ProcessExit(BaseException):
    """Raised by :meth:`Process.exit`; the kernel turns it into an exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Process:
    """Syscall handle of one protection domain (process or server)."""

    __slots__ = ("_dom",)

    def __init__(self, dom: Domain) -> None:
        self._dom = dom

    # -- identity ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._dom.pid

    @property
    def name(self) -> str:
        return self._dom.name

    def __repr__(self) -> str:
        return f"<Process pid={self.pid} {self.name!r}>"

    def exit(self, code: int = 0) -> NoReturn:
        """End this domain now with exit status ``code``."""
        if not isinstance(code, int):
            raise ConfigError(f"exit code must be an int, not {type(code).__name__}")
        raise ProcessExit(int(code))

    def _alive(self) -> None:
        """Refuse a syscall through the handle of a domain that has ended."""
        if self._dom.exit is not None:
            raise ProcessError(
                f"{self.name!r} (pid {self.pid}) has ended; its handle is dead"
            )

    # -- capabilities -----------------------------------------------------------------------

    def _slot(self, ref: SlotRef) -> int:
        return self._dom.cspace.resolve_name(ref) if isinstance(ref, str) else ref

    def _slots(self, caps: Sequence[SlotRef]) -> list[int]:
        """The slots of capabilities to attach: a list or tuple of slot refs."""
        if not isinstance(caps, list | tuple):
            raise MalformedMessage(
                f"caps must be a list or tuple of slots, not {type(caps).__name__}"
            )
        return [self._slot(c) for c in caps]

    def slot(self, name: str) -> int:
        """The slot index that carries ``name``."""
        if type(name) is not str:
            raise InvalidSlot(f"slot names are str, not {type(name).__name__}")
        return self._dom.cspace.resolve_name(name)

    def name_slot(self, slot: SlotRef, name: str) -> None:
        """Give a slot of this CSpace a name (e.g. a capability received in a message)."""
        check_name(name, "slot name")
        if not name:
            raise ConfigError("a slot name must not be empty")
        self._dom.cspace.name_slot(self._slot(slot), name)

    def caps(self) -> list[CapInfo]:
        """This domain's capabilities: slot, name, object kind, rights, badge."""
        return self._dom.cspace.info()

    def new_endpoint(self, name: str = "", contract: Contract | None = None) -> int:
        """Create an endpoint (optionally bound to a contract); returns its slot (rwg)."""
        self._alive()
        check_object_args(name, contract)
        dom = self._dom
        return dom.cspace.insert_original(Endpoint(name, contract), Rights.ALL, name, dom.usage)

    def new_notification(self, name: str = "") -> int:
        """Create a notification; returns its slot (rwg).  Charged like an endpoint."""
        self._alive()
        check_object_args(name, None)
        dom = self._dom
        return dom.cspace.insert_original(Notification(name), Rights.ALL, name, dom.usage)

    def copy(self, slot: SlotRef, rights: str | Rights = Rights.ALL, name: str = "") -> int:
        """Derive a copy (rights can only shrink)."""
        check_name(name, "slot name")
        return self._dom.cspace.copy(self._slot(slot), Rights.parse(rights), name)

    def mint(self, slot: SlotRef, rights: str | Rights, badge: int, name: str = "") -> int:
        """Derive a capability with fewer rights and a badge (only on an unbadged one)."""
        check_name(name, "slot name")
        return self._dom.cspace.mint(self._slot(slot), Rights.parse(rights), badge, name)

    def move(self, slot: SlotRef, dest: int | None = None) -> int:
        return self._dom.cspace.move(self._slot(slot), dest)

    def delete(self, slot: SlotRef) -> None:
        cap = self._dom.cspace.lookup(self._slot(slot))
        if isinstance(cap.obj, ReplyObject):
            cap.obj.abort(f"{self.name!r} deleted the reply capability")
        self._dom.cspace.delete(cap.slot)

    async def revoke(self, slot: SlotRef) -> int:
        """Delete every capability derived from this one, in every domain; IPC blocked
        on any of them fails with :class:`~capkern.errors.CapabilityRevoked`.
        Preemptible (see :func:`revoke`): returns once all are gone."""
        ipc.refuse_in_answer("a revoke")  # it waits: not on a caller's task (_inplace)
        return await revoke(self._dom.cspace.lookup(self._slot(slot)))

    # -- IPC ------------------------------------------------------------------------------

    def _msg(self, slot: SlotRef, label: str, body: Any, raw: bytes | None,
             caps: Sequence[SlotRef]) -> tuple[Any, Any]:
        dom = self._dom
        cap = dom.cspace.lookup(self._slot(slot), _WRITE, Endpoint)
        slots = self._slots(caps) if caps else ()
        msg = ipc.make_message(dom, cap, label, body, raw, slots)
        return cap, msg

    async def send(self, slot: SlotRef, label: str, body: Any = None, *,
                   caps: Sequence[SlotRef] = ()) -> None:
        """Send a message; blocks until a receiver takes it."""
        cap, msg = self._msg(slot, label, body, None, caps)
        await ipc.send(self._dom, cap, msg, call=False)

    def nbsend(self, slot: SlotRef, label: str, body: Any = None, *,
               caps: Sequence[SlotRef] = ()) -> bool:
        """Non-blocking send: delivered only if a receiver is waiting (else dropped)."""
        cap, msg = self._msg(slot, label, body, None, caps)
        return ipc.nbsend(self._dom, cap, msg)

    def call(self, slot: SlotRef, label: str, body: Any = None, *,
             caps: Sequence[SlotRef] = ()) -> Coroutine[Any, Any, Received]:
        """Send and wait for the reply (the kernel makes a one-shot reply capability):
        ``await proc.call(...)``.  The message is built and checked when called; the
        call itself is the kernel's coroutine (a call always returns the reply)."""
        dom = self._dom  # _msg, inlined: the pager calls its disk this way at every fault
        cspace = dom.cspace
        cap = cspace.lookup(cspace.resolve_name(slot) if isinstance(slot, str) else slot,
                            _WRITE, Endpoint)
        msg = ipc.make_message(dom, cap, label, body, None, self._slots(caps) if caps else ())
        return ipc.send(dom, cap, msg, call=True)  # type: ignore[return-value]

    async def send_raw(self, slot: SlotRef, label: str, raw: bytes, *,
                       caps: Sequence[SlotRef] = ()) -> None:
        """Send pre-encoded body bytes (checked by the kernel like any untrusted input)."""
        cap, msg = self._msg(slot, label, None, raw, caps)
        await ipc.send(self._dom, cap, msg, call=False)

    async def call_raw(self, slot: SlotRef, label: str, raw: bytes, *,
                       caps: Sequence[SlotRef] = ()) -> Received:
        cap, msg = self._msg(slot, label, None, raw, caps)
        got = await ipc.send(self._dom, cap, msg, call=True)
        assert got is not None
        return got

    def recv(self, slot: SlotRef, *, offer: Offer | None = None
             ) -> Coroutine[Any, Any, Received]:
        """Receive the next message on an endpoint (needs the read right): ``await
        proc.recv(slot)``.  The capability is looked up when called, and the receive
        itself is the kernel's coroutine (no wrapper: every server receives this way).
        While it waits, calls for the labels of ``offer`` (:meth:`offer`) are answered
        in place, at the caller's trap (:mod:`capkern._inplace`)."""
        dom = self._dom
        cspace = dom.cspace
        cap = cspace.lookup(cspace.resolve_name(slot) if isinstance(slot, str) else slot,
                            _READ, Endpoint)
        if offer is not None:
            _check_offer(offer)
        return ipc.recv(dom, cap, offer)

    def offer(self, labels: Iterable[str], answer: Answer,
              on_refused: Refused | None = None) -> Offer:
        """Answers to offer with receives (``recv``/``reply_recv``'s ``offer``): for each
        request label in ``labels``, ``answer(label, body)`` returns the reply as
        ``(label, body)`` -- ``("ok", body)`` or ``("error", {"reason": ...,
        "detail": ...})`` -- and must be a plain function of the request: it runs on the
        caller's task, at its trap, and must not reply, receive or wait itself (a
        receive, send, call, wait, revoke or memory operation begun there is refused
        with :class:`~capkern.errors.IPCError`).  Raising ends this server, as a
        handler's bug would.  ``on_refused`` hears of an answer the kernel refused.  The
        offer is read-only once made.  The server loop offers its immediate handlers
        this way."""
        return Offer(labels, answer, on_refused)

    def _take_reply(self) -> ReplyObject:
        reply = self._dom.take_reply()
        if reply is None:
            raise ReplyError(f"{self.name!r} has no caller to reply to")
        return reply

    def _answer(self, label: str, body: Any, raw: bytes | None,
                slots: Sequence[int]) -> bool:
        """Reply through the implicit reply capability.  A refused reply raises here and
        leaves the capability in place, so the server can still answer its caller."""
        dom = self._dom
        reply = dom.reply
        if reply is None:
            raise ReplyError(f"{self.name!r} has no caller to reply to")
        msg = _reply.check_reply(dom, reply, label, body, raw, slots)
        dom.reply = None
        return _reply.deliver_reply(dom, reply, msg)

    def reply(self, label: str = "ok", body: Any = None, *,
              caps: Sequence[SlotRef] = ()) -> bool:
        """Answer the last call received.  False if that caller has gone away.  A reply
        the kernel refuses raises its typed error and is not used up: answer again."""
        # resolve slot names first: a bad name must not cost the caller its reply
        slots = self._slots(caps) if caps else ()
        dom = self._dom  # _answer, inlined: every server reply comes this way
        reply = dom.reply
        if reply is None:
            raise ReplyError(f"{self.name!r} has no caller to reply to")
        msg = _reply.check_reply(dom, reply, label, body, None, slots)
        dom.reply = None
        return _reply.deliver_reply(dom, reply, msg)

    def reply_raw(self, label: str, raw: bytes) -> bool:
        return self._answer(label, None, raw, ())

    def reply_error(self, reason: str, detail: str = "") -> bool:
        """The contract's typed error reply: label ``error``, ``{reason, detail}``."""
        return self.reply("error", {"reason": reason, "detail": detail})

    def reply_recv(self, slot: SlotRef, label: str = "ok", body: Any = None, *,
                   caps: Sequence[SlotRef] = (), offer: Offer | None = None
                   ) -> Coroutine[Any, Any, Received]:
        """ReplyRecv (seL4): answer the current caller (if any), then receive the next
        message on ``slot``, in one trap: ``await proc.reply_recv(slot, "ok", body)``.
        The reply is made when called: one refused raises its typed error there, before
        the receive, and keeps the reply capability (as :meth:`reply`); the receive is
        the kernel's coroutine, as :meth:`recv` returns it (the server loop's step), with
        its ``offer``."""
        dom = self._dom
        if offer is not None:
            _check_offer(offer)
        reply = dom.reply
        if reply is not None:  # reply(), inlined
            slots = self._slots(caps) if caps else ()
            msg = _reply.check_reply(dom, reply, label, body, None, slots)
            dom.reply = None
            _reply.deliver_reply(dom, reply, msg)
        cspace = dom.cspace
        cap = cspace.lookup(cspace.resolve_name(slot) if isinstance(slot, str) else slot,
                            _READ, Endpoint)
        return ipc.recv(dom, cap, offer)

    def save_caller(self, name: str = "") -> int:
        """Move the implicit reply capability into a CSpace slot, to reply later."""
        check_name(name, "slot name")
        reply = self._take_reply()
        try:
            return self._dom.cspace.insert_original(reply, Rights.WRITE, name)
        except CapkernError:
            self._dom.reply = reply  # still ours to answer: the caller must not hang
            raise

    def reply_to(self, slot: SlotRef, label: str = "ok", body: Any = None, *,
                 caps: Sequence[SlotRef] = ()) -> bool:
        """Reply through a saved reply capability; the capability is used up (unless the
        kernel refuses the reply: then it stays, and the typed error is raised)."""
        slots = self._slots(caps) if caps else ()  # before the cap is used up
        cap = self._dom.cspace.lookup(self._slot(slot), Rights.WRITE, ReplyObject)
        reply: ReplyObject = cap.obj  # type: ignore[assignment]
        msg = _reply.check_reply(self._dom, reply, label, body, None, slots)
        self._dom.cspace.delete(cap.slot)
        return _reply.deliver_reply(self._dom, reply, msg)

    # -- memory -----------------------------------------------------------------------------

    def mmap(self, length: int, rights: str | Rights = "rw", addr: int | None = None) -> int:
        """Map ``length`` bytes (rounded up to pages) of demand-zero memory; returns the
        start address.  ``rights``: "r" or "rw"."""
        return self._vm().mmap(self._dom, length, Rights.parse(rights), addr)

    def munmap(self, addr: int, length: int) -> None:
        """Unmap pages; their frames are freed and their sealed copies discarded."""
        self._vm().munmap(self._dom, addr, length)

    def read(self, addr: int, n: int) -> Coroutine[Any, Any, bytes]:
        """Read ``n`` bytes at ``addr`` (faulting pages in as needed): ``await
        proc.read(addr, n)``.  The arguments are checked when called, and the access
        itself is the VM's coroutine (no wrapper: a fault's task passes through every
        frame of its await chain at each of its steps)."""
        vm = self._vm()
        if type(addr) is not int or type(n) is not int or n < 0:  # checks off the hot path
            addr, n = _int_arg(addr, "address"), _length(n)
        return vm.read(self._dom, addr, n)

    def write(self, addr: int, data: bytes | bytearray | memoryview
              ) -> Coroutine[Any, Any, None]:
        """Write ``data`` (bytes-like) at ``addr`` (faulting pages in as needed): ``await
        proc.write(addr, data)``, checked when called as :meth:`read` is."""
        vm = self._vm()
        if type(addr) is not int or type(data) is not bytes:  # checks off the hot path
            addr, data = _int_arg(addr, "address"), _data(data)
        return vm.write(self._dom, addr, data)

    async def access(self, addrs: Sequence[int], write: bool = False,
                     future: bool = False, count: int | None = None) -> bytes:
        """Reference the page of each address in ``addrs``, in order, in one trap.

        Each reference goes through the page tables and the fault path exactly as a
        one-byte ``read`` (or ``write``) would; the result has one byte per reference, 1
        for a hit and 0 for a fault.  ``future=True`` (precise boots, offline simulation)
        lets the kernel tell the pager each page's next use within this list, for
        Belady's OPT; ``count`` then limits the references made to the first ``count``
        (the rest is only the future).  See :mod:`capkern.mmu._batch`.
        """
        from .mmu._batch import access

        return await access(self._vm(), self._dom, addrs, write, future, count)

    def _vm(self) -> VM:
        if ipc.answering is not None:  # a fault waits: not on a caller's task (_inplace)
            ipc.refuse_in_answer("a memory operation")
        dom = self._dom
        vm: VM | None = dom.kernel.vm
        if vm is None or dom.aspace is None:
            raise SegmentationFault(f"{self.name!r} has no address space (paging is off)")
        if dom.exit is not None:
            self._alive()
        return vm

    # -- notifications ----------------------------------------------------------------------

    def signal(self, slot: SlotRef) -> None:
        cap = self._dom.cspace.lookup(self._slot(slot), Rights.WRITE, Notification)
        _notify.signal(self._dom, cap)

    def poll(self, slot: SlotRef) -> int:
        return _notify.poll(self._dom.cspace.lookup(self._slot(slot), Rights.READ, Notification))

    async def wait(self, slot: SlotRef) -> int:
        cap = self._dom.cspace.lookup(self._slot(slot), Rights.READ, Notification)
        return await _notify.wait(cap)


