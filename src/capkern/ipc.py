"""IPC: endpoints, notifications and one-shot reply objects (kernel side).

IPC is kernel code run at the sender's trap: a send hands the message straight to a
waiting receiver and reschedules it -- it never hops through the kernel's own task, as a
real microkernel's IPC fast path does not.  A call parks the caller until the one-shot
reply object the kernel made for it is used (or the server dies, or the caller is
cancelled).  Waiting is built on ``trio.lowlevel.wait_task_rescheduled``, so every
blocking operation is a Trio checkpoint with clean cancellation.

Endpoint rendezvous follows seL4: a send blocks until a receiver takes it (bounded by
``Limits.max_queued_senders`` blocked senders per endpoint); ``nbsend`` delivers only if
a receiver is already waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from . import wire
from .contract import Contract
from .cspace import Cap, KObject, Rights
from .errors import (
    CallAborted,
    ContractViolation,
    MalformedMessage,
    QueueFull,
    ReplyError,
    ServerError,
    TooManyCaps,
)
from .trace import IpcRecord

if TYPE_CHECKING:
    from .domain import Domain

__all__ = ["Endpoint", "Notification", "Received", "ReplyObject"]


class Received:
    """A message as its receiver sees it: freshly decoded, in the receiver's terms.

    ``caps`` are slot indices in the *receiver's* CSpace (0 where a capability could
    not be transferred).  ``badge`` is the badge of the sender's capability: it is how a
    server tells its clients apart.
    """

    __slots__ = ("_raw", "_value", "badge", "caps", "label")

    def __init__(self, label: str, raw: bytes, value: Any, badge: int, caps: tuple[int, ...]):
        self.label = label
        self._raw = raw
        self._value = value
        self.badge = badge
        self.caps = caps

    @property
    def body(self) -> Any:
        if self._value is _UNDECODED:
            self._value = wire.decode(self._raw)
        return self._value

    @property
    def size(self) -> int:
        return len(self._raw)

    def ok(self) -> Any:
        """For replies from contracted servers: the body, or raise the typed error."""
        if self.label == "error":
            body = self.body
            raise ServerError(str(body.get("reason", "?")), str(body.get("detail", "")))
        return self.body

    def __repr__(self) -> str:
        return (
            f"Received(label={self.label!r}, badge={self.badge}, caps={self.caps}, "
            f"body={self.body!r})"
        )


_UNDECODED: Any = object()


class _Msg:
    """A message in flight inside the kernel."""

    __slots__ = ("badge", "caps", "label", "raw", "value")

    def __init__(self, label: str, raw: bytes, value: Any, badge: int, caps: list[Cap]):
        self.label = label
        self.raw = raw
        self.value = value
        self.badge = badge
        self.caps = caps


class ReplyObject(KObject):
    """The one-shot right to answer one call.  Used once, then dead."""

    kind = "Reply"

    __slots__ = ("caller", "caller_dom", "contract", "grant", "request_label", "state")

    def __init__(
        self,
        caller: Task,
        caller_dom: Domain,
        request_label: str,
        contract: Contract | None,
        grant: bool,
    ) -> None:
        super().__init__()
        self.caller = caller
        self.caller_dom = caller_dom
        self.request_label = request_label
        self.contract = contract
        self.grant = grant
        self.state = "waiting"  # -> "done" | "gone" (caller cancelled) | "aborted"

    def abort(self, why: str) -> None:
        """The holder died or dropped it: wake the caller with :class:`CallAborted`."""
        if self.state == "waiting":
            self.state = "aborted"
            reschedule(self.caller, outcome.Error(CallAborted(why)))


class _Blocked:
    __slots__ = ("dom", "grant", "msg", "reply", "task", "want_reply")

    def __init__(
        self, task: Task, dom: Domain, msg: _Msg | None, want_reply: bool, grant: bool = False
    ) -> None:
        self.task = task
        self.dom = dom
        self.msg = msg
        self.want_reply = want_reply
        self.grant = grant
        self.reply: ReplyObject | None = None


class Endpoint(KObject):
    """A rendezvous point for messages, optionally bound to a :class:`Contract`."""

    kind = "Endpoint"

    def __init__(self, name: str = "", contract: Contract | None = None) -> None:
        super().__init__(name)
        self.contract = contract
        self.senders: deque[_Blocked] = deque()
        self.receivers: deque[_Blocked] = deque()


class Notification(KObject):
    """A word of signal bits: signal ORs a badge in, wait takes the word (seL4)."""

    kind = "Notification"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.word = 0
        self.waiters: deque[Task] = deque()


# -- building and delivering messages ----------------------------------------------------


def make_message(
    dom: Domain, cap: Cap, label: str, body: Any, raw: bytes | None, cap_slots: Sequence[int]
) -> _Msg:
    """Decode phase of a send: every check that can fail, before anything changes."""
    k = dom.kernel
    limits = k.limits
    if not isinstance(label, str) or not label or len(label) > limits.max_label_len:
        k.stats.messages_rejected += 1
        raise MalformedMessage(
            f"label must be a non-empty str of at most {limits.max_label_len} chars"
        )
    try:
        if raw is None:
            raw = wire.encode(body, limits)
            value = _UNDECODED
        else:
            value = wire.decode_untrusted(raw, limits)
            raw = bytes(raw)
        caps: list[Cap] = []
        if cap_slots:
            if len(cap_slots) > limits.max_caps:
                raise TooManyCaps(f"{len(cap_slots)} capabilities; at most {limits.max_caps}")
            dom.cspace.lookup(cap.slot, Rights.GRANT)
            caps = [dom.cspace.lookup(s) for s in cap_slots]
    except Exception:
        k.stats.messages_rejected += 1
        raise
    contract = getattr(cap.obj, "contract", None)
    if contract is not None:
        if value is _UNDECODED:
            value = wire.decode(raw)
        try:
            contract.check_request(label, value)
        except ContractViolation:
            k.stats.contract_violations += 1
            raise
    return _Msg(label, raw, value, cap.badge, caps)


def kernel_message(dom: Domain, cap: Cap, label: str, body: Any) -> _Msg:
    """A request the kernel built itself (the fault path's calls to its servers): encoded
    within the wire limits, no capabilities, and not re-checked against the endpoint's
    contract item by item -- the kernel is trusted to build its own requests right (its
    tests check them against the contract).  Replies are still checked at the server's
    reply trap: the server is the untrusted side."""
    return _Msg(label, wire.encode_trusted(body, dom.kernel.limits), _UNDECODED, cap.badge, [])


def _transfer(msg: _Msg, to: Domain) -> tuple[int, ...]:
    """Place the message's capabilities in the receiver's CSpace (children of the
    sender's).  A capability revoked while the message waited, or one that does not fit,
    is dropped and shows as slot 0 (as seL4 drops caps it cannot transfer)."""
    slots = []
    for src in msg.caps:
        if src.cspace is None:
            slots.append(0)
            continue
        try:
            slots.append(to.cspace.insert_derived(src, src.rights, None))
        except Exception:
            slots.append(0)
    to.kernel.stats.caps_transferred += len(slots)
    return tuple(slots)


def _deliver(msg: _Msg, to: Domain) -> Received:
    caps = _transfer(msg, to) if msg.caps else ()
    return Received(msg.label, msg.raw, msg.value, msg.badge, caps)


def _trace(
    dom: Domain, op: str, obj: KObject, label: str, badge: int, size: int, caps: int
) -> None:
    k = dom.kernel
    k.trace.add(
        IpcRecord(trio.current_time(), op, dom.pid, dom.name, obj.label(), label, badge, size, caps)
    )


# -- endpoint operations ------------------------------------------------------------------


async def send(dom: Domain, cap: Cap, msg: _Msg, *, call: bool) -> Received | None:
    """Send (or call).  Blocks until a receiver takes the message (and, for a call,
    until the reply comes back)."""
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    k = dom.kernel
    if k.trace.enabled:
        _trace(
            dom, "call" if call else "send", ep, msg.label, msg.badge, len(msg.raw), len(msg.caps)
        )
    await checkpoint_if_cancelled()
    me = current_task()
    if ep.receivers:
        waiter = ep.receivers.popleft()
        got = _deliver(msg, waiter.dom)
        if call:
            k.stats.ipc_calls += 1
            reply = ReplyObject(me, dom, msg.label, ep.contract, bool(cap.rights._value_ & 4))
            waiter.dom.set_reply(reply)
            reschedule(waiter.task, outcome.Value(got))
            return await _await_reply(reply)
        k.stats.ipc_sends += 1
        reschedule(waiter.task, outcome.Value(got))
        await cancel_shielded_checkpoint()
        return None
    if len(ep.senders) >= k.limits.max_queued_senders:
        raise QueueFull(f"{ep.label()} already has {len(ep.senders)} blocked senders")
    blocked = _Blocked(me, dom, msg, call, bool(cap.rights._value_ & 4))
    ep.senders.append(blocked)
    if call:
        k.stats.ipc_calls += 1
    else:
        k.stats.ipc_sends += 1

    def abort(_: Any) -> Abort:
        if blocked.reply is not None:
            blocked.reply.state = "gone"
        else:
            ep.senders.remove(blocked)
        return Abort.SUCCEEDED

    result: Received | None = await wait_task_rescheduled(abort)
    return result


async def _await_reply(reply: ReplyObject) -> Received:
    def abort(_: Any) -> Abort:
        reply.state = "gone"
        return Abort.SUCCEEDED

    got: Received = await wait_task_rescheduled(abort)
    return got


def nbsend(dom: Domain, cap: Cap, msg: _Msg) -> bool:
    """Deliver only if a receiver is waiting; otherwise drop.  Never blocks."""
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    if dom.kernel.trace.enabled:
        _trace(dom, "nbsend", ep, msg.label, msg.badge, len(msg.raw), len(msg.caps))
    if not ep.receivers:
        return False
    waiter = ep.receivers.popleft()
    dom.kernel.stats.ipc_sends += 1
    reschedule(waiter.task, outcome.Value(_deliver(msg, waiter.dom)))
    return True


async def recv(dom: Domain, cap: Cap) -> Received:
    """Take the next message from an endpoint, waiting for one if none is queued."""
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    dom.kernel.stats.ipc_receives += 1
    await checkpoint_if_cancelled()
    if ep.senders:
        sender = ep.senders.popleft()
        assert sender.msg is not None
        got = _deliver(sender.msg, dom)
        if sender.want_reply:
            reply = ReplyObject(
                sender.task, sender.dom, sender.msg.label, ep.contract, sender.grant
            )
            sender.reply = reply
            dom.set_reply(reply)
        else:
            reschedule(sender.task, outcome.Value(None))
        await cancel_shielded_checkpoint()
        return got
    me = _Blocked(current_task(), dom, None, False)
    ep.receivers.append(me)

    def abort(_: Any) -> Abort:
        ep.receivers.remove(me)
        return Abort.SUCCEEDED

    got = await wait_task_rescheduled(abort)
    assert isinstance(got, Received)
    return got


def reply(
    dom: Domain,
    reply_obj: ReplyObject,
    label: str,
    body: Any,
    raw: bytes | None,
    cap_slots: Sequence[int],
) -> bool:
    """Answer a call through its one-shot reply object.  Returns False if the caller
    had already gone (cancelled or timed out): the reply is dropped, nothing fails."""
    k = dom.kernel
    if reply_obj.state == "done":
        raise ReplyError("this reply capability was already used")
    if reply_obj.state == "aborted":
        raise ReplyError("this reply capability was aborted")
    try:
        if not isinstance(label, str) or not label or len(label) > k.limits.max_label_len:
            raise MalformedMessage("reply label must be a short non-empty str")
        if cap_slots and not reply_obj.grant:
            raise ReplyError("the caller did not grant the right to receive capabilities")
        if len(cap_slots) > k.limits.max_caps:
            raise TooManyCaps(f"{len(cap_slots)} capabilities; at most {k.limits.max_caps}")
        caps = [dom.cspace.lookup(s) for s in cap_slots]
        if raw is None:
            raw = wire.encode(body, k.limits)
            value = _UNDECODED
        else:
            value = wire.decode_untrusted(raw, k.limits)
            raw = bytes(raw)
    except Exception as exc:
        # the replier gets the error in full; the caller must not hang on a broken server,
        # but learns only the kind of error (not the server's slots or domain details)
        k.stats.messages_rejected += 1
        _fail_caller(reply_obj, ContractViolation(
            f"server sent a bad reply ({type(exc).__name__}); the call has no answer"))
        raise
    if reply_obj.contract is not None:
        if value is _UNDECODED:
            value = wire.decode(raw)
        try:
            reply_obj.contract.check_reply(reply_obj.request_label, label, value)
        except ContractViolation as exc:
            k.stats.contract_violations += 1
            _fail_caller(reply_obj, ContractViolation(f"server replied out of contract: {exc}"))
            raise
    k.stats.ipc_replies += 1
    if k.trace.enabled:
        _trace(dom, "reply", reply_obj, label, 0, len(raw), len(caps))
    if reply_obj.state == "gone":
        reply_obj.state = "done"
        return False
    reply_obj.state = "done"
    msg = _Msg(label, raw, value, 0, caps)
    reschedule(reply_obj.caller, outcome.Value(_deliver(msg, reply_obj.caller_dom)))
    return True


def _fail_caller(reply_obj: ReplyObject, exc: Exception) -> None:
    was = reply_obj.state
    reply_obj.state = "done"
    if was == "waiting":
        reschedule(reply_obj.caller, outcome.Error(exc))


# -- notifications ----------------------------------------------------------------------


def signal(dom: Domain, cap: Cap) -> None:
    """OR the capability's badge (1 if unbadged) into the word, or wake one waiter."""
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    dom.kernel.stats.signals += 1
    bits = cap.badge or 1
    if ntfn.waiters:
        reschedule(ntfn.waiters.popleft(), outcome.Value(bits | ntfn.word))
        ntfn.word = 0
    else:
        ntfn.word |= bits


def poll(cap: Cap) -> int:
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    word, ntfn.word = ntfn.word, 0
    return word


async def wait(cap: Cap) -> int:
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    await checkpoint_if_cancelled()
    if ntfn.word:
        word, ntfn.word = ntfn.word, 0
        await cancel_shielded_checkpoint()
        return word
    me = current_task()
    ntfn.waiters.append(me)

    def abort(_: Any) -> Abort:
        ntfn.waiters.remove(me)
        return Abort.SUCCEEDED

    woken: int = await wait_task_rescheduled(abort)
    return woken
