"""IPC: endpoints, messages and one-shot reply objects (kernel side).

IPC is kernel code run at the sender's trap: a send hands the message straight to a
waiting receiver and reschedules it -- it never hops through the kernel's own task, as a
real microkernel's IPC fast path does not.  A call parks the caller until the one-shot
reply object the kernel made for it is used (or the server dies, or the caller is
cancelled).  Waiting is built on ``trio.lowlevel.wait_task_rescheduled``, so every
blocking operation is a Trio checkpoint with clean cancellation.

Endpoint rendezvous follows seL4: a send blocks until a receiver takes it (bounded by
``Limits.max_queued_senders`` blocked senders per endpoint, and by the sender's ``queued``
quota); ``nbsend`` delivers only if a receiver is already waiting.

Revoke means revoke: every blocked operation (a receiver in ``recv``, a sender whose
message is not yet delivered, a waiter on a notification) is registered on the
capability it blocked through, and removing that capability (delete, revoke of it or an
ancestor, its domain's teardown) fails the operation with
:class:`~capkern.errors.CapabilityRevoked`; so no message is ever delivered with a badge
that no longer exists.  Moving a capability keeps it (and what waits on it).

Capabilities transferred by IPC are placed in -- and charged to the ``slots`` quota of
-- the receiver; one that does not fit is dropped (slot 0, ``stats.caps_dropped``).
Answering a call (checking a reply in full, then delivering it) is :mod:`._reply`;
notifications are :mod:`._notify`; the objects IPC works on (endpoints, reply objects,
blocked receivers) are :mod:`._ipcobj`, and a call answered at the caller's trap is
:mod:`._inplace`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import (
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from . import _wire as wire
from ._contract import Contract
from ._cspace import Cap, KObject, Rights
from ._ipcobj import (
    _GRANT,
    _WAITING,
    Endpoint,
    InPlace,
    Party,
    ReplyObject,
    Timed,
    Waiting,
    _Receiver,
)
from ._message import _NO_CAPS, UNDECODED, Delivered, Message, Received
from ._queue import enqueue, take
from ._trace import Delivery, IpcRecord
from .errors import (
    CapabilityRevoked,
    ContractViolation,
    IPCError,
    MalformedMessage,
    TooManyCaps,
)

if TYPE_CHECKING:
    pass

__all__ = ["IN_PLACE_YIELD", "UNDECODED", "Endpoint", "InPlace", "Message", "Party", "Received",
           "ReplyObject", "Timed", "Waiting", "call_now", "deliver", "encode_if_valid",
           "kernel_message", "make_message", "nbsend", "plain_label", "recv",
           "refuse_in_answer", "send", "trace_op"]



#: calls a domain may have answered in place in a row before its call yields once
IN_PLACE_YIELD = 16
#: the server whose answer runs in place right now (:mod:`capkern._inplace`), on its
#: caller's task: nothing may block or wait on that task until the answer is done
answering: Party | None = None


# -- building and delivering messages ----------------------------------------------------


def plain_label(label: object, limits: wire.Limits) -> str:
    """``label`` as a plain ``str`` a receiver may hold: a ``str`` subclass is copied to
    an exact ``str`` (no object, and no method, of the sender's reaches another domain);
    anything else, empty or too long is :class:`MalformedMessage`."""
    if not isinstance(label, str):
        raise MalformedMessage(f"label must be a str, not {type(label).__name__}")
    label = str.__str__(label)  # an exact str, whatever the subclass overrides
    if not label or len(label) > limits.max_label_len:
        raise MalformedMessage(
            f"label must be a non-empty str of at most {limits.max_label_len} chars")
    return label


def make_message(
    dom: Party, cap: Cap, label: str, body: Any, raw: bytes | None, cap_slots: Sequence[int]
) -> Message:
    """Decode phase of a send: every check that can fail, before anything changes."""
    k = dom.kernel
    limits = k.limits
    if type(label) is not str or not label or len(label) > limits.max_label_len:
        try:
            label = plain_label(label, limits)
        except MalformedMessage:
            k.stats.messages_rejected += 1
            raise
    contract = getattr(cap.obj, "contract", None)
    if contract is not None and raw is None and not cap_slots:
        fast = _closed_request(limits, contract, cap, label, body)
        if fast is not None:
            return fast
    unwalked = False
    try:
        if raw is None:
            if contract is not None and contract.closed_request(label, limits.max_depth):
                raw, value = wire.encode_unwalked(body, limits)  # the schema walks it
                unwalked = True
            else:
                raw = wire.encode(body, limits)
                value = UNDECODED
        else:
            value = wire.decode_untrusted(raw, limits)
            raw = bytes(raw)
        caps: Sequence[Cap] = _NO_CAPS
        if cap_slots:
            if len(cap_slots) > limits.max_caps:
                raise TooManyCaps(f"{len(cap_slots)} capabilities; at most {limits.max_caps}")
            dom.cspace.lookup(cap.slot, Rights.GRANT)
            caps = [dom.cspace.lookup(s) for s in cap_slots]
    except Exception:
        k.stats.messages_rejected += 1
        raise
    if contract is not None:
        if value is UNDECODED:
            value = wire.decode(raw)
        try:
            contract.check_request(label, value)
        except ContractViolation:
            if unwalked:  # a wire-level fault is reported as itself
                try:
                    wire.encode(body, limits)
                except Exception:
                    k.stats.messages_rejected += 1
                    raise
            k.stats.contract_violations += 1
            raise
        if not unwalked and not contract.builtin_request(label):
            value = UNDECODED  # a program's schema node saw it: the receiver decodes its own
    return Message(label, raw, value, cap.badge, caps)


def _closed_request(limits: wire.Limits, contract: Contract, cap: Cap, label: str,
                    body: Any) -> Message | None:
    """The common request, checked in fewer steps: no capabilities, to an operation whose
    request schema is closed (:func:`capkern._contract.closed`) and within the depth
    limit.  Encoded without the shape walk, it passes its compiled test; None for
    anything else -- a refusal included -- which :func:`make_message` then checks (and
    explains, and counts) from the start."""
    op = contract.ops.get(label)
    if op is None or not op.request_closed or op.request_depth > limits.max_depth:
        return None
    passed = encode_if_valid(body, limits, op.request_valid)
    return None if passed is None else Message(label, passed[0], passed[1], cap.badge, _NO_CAPS)


def encode_if_valid(body: Any, limits: wire.Limits, valid: Callable[[Any], bool]
                    ) -> tuple[bytes, Any] | None:
    """The fast paths' one pass (a request or an ``ok`` reply tested by a closed schema):
    ``body`` encoded without the shape walk and read back, if that value passes ``valid``
    (the compiled schema); None for anything else, which the full check then refuses with
    its typed, counted error."""
    try:
        passed = wire.encode_unwalked(body, limits)
    except Exception:
        return None
    try:
        if not valid(passed[1]):
            return None
    except Exception:  # (closed: built-in nodes with plain bounds; never expected)
        return None
    return passed


def kernel_message(dom: Party, cap: Cap, label: str, body: Any) -> Message:
    """A request the kernel built itself (the fault path's calls to its servers): encoded
    within the wire limits, no capabilities, and not re-checked against the endpoint's
    contract item by item -- the kernel is trusted to build its own requests right (its
    tests check them against the contract).  Replies are still checked at the server's
    reply trap: the server is the untrusted side."""
    # decoded here, not at the receiver's first read of ``body``: the server always reads
    # it, and a decoded body is a plain slot read (fresh objects all the same: nothing but
    # this message ever holds them)
    raw, value = wire.encode_unwalked(body, dom.kernel.limits)
    return Message(label, raw, value, cap.badge, _NO_CAPS)


def _transfer(msg: Message, to: Party) -> tuple[int, ...]:
    """Place the message's capabilities in the receiver's CSpace (children of the
    sender's).  A capability revoked while the message waited, or one that does not fit,
    is dropped and shows as slot 0 (as seL4 drops caps it cannot transfer)."""
    slots = []
    for src in msg.cap_src:
        if src.cspace is None:
            slots.append(0)
            continue
        try:
            slots.append(to.cspace.insert_derived(src, src.rights, None))
        except Exception:  # the receiver's CSpace or slots quota is full: it pays
            to.kernel.stats.caps_dropped += 1
            slots.append(0)
    to.kernel.stats.caps_transferred += len(slots)
    return tuple(slots)


def deliver(msg: Message, to: Party) -> Received:
    """The receiver's view of ``msg`` (its capabilities moved into the receiver's CSpace).
    A message with no capabilities and no trace flow is its own view: the fast paths
    below deliver it as it is."""
    caps = _transfer(msg, to) if msg.cap_src else ()
    if msg.flow:
        k = to.kernel
        k.trace.delivered(
            Delivery(trio.current_time() - k.boot_time, to.pid, to.name, msg.label, msg.flow))
    return Received(msg.label, msg._raw, msg.body, msg.badge, caps)


def trace_op(
    dom: Party, op: str, obj: KObject, label: str, badge: int, size: int, caps: int,
    msg: Message | None = None,
) -> None:
    """Record an IPC operation (time since boot); a traced message gets a flow id so its
    delivery can be matched to this record."""
    k = dom.kernel
    flow = 0
    if msg is not None:
        flow = msg.flow = k.trace.new_flow()
    k.trace.add(
        IpcRecord(trio.current_time() - k.boot_time, op, dom.pid, dom.name, obj.label(), label,
                  badge, size, caps),
        flow,
    )


# -- endpoint operations ------------------------------------------------------------------


def refuse_in_answer(what: str) -> None:
    """Refuse an operation that would block, driven by hand inside an answer in place
    (:mod:`capkern._inplace`): the answer runs on its *caller's* task, so a receive,
    send, call or wait begun there would park the caller's task in the server's place --
    the next message to the server would wake the caller in the middle of something
    else.  A no-op outside an answer (one global read)."""
    if answering is not None:
        raise IPCError(f"{what} inside an answer in place: {answering.name!r} answers at "
                       "its caller's trap, on its caller's task, and must not block there")


async def send(dom: Party, cap: Cap, msg: Message, *, call: bool, timer: Timed | None = None,
               yields: bool = False, bounded: bool = True) -> Received | None:
    """Send (or call).  Blocks until a receiver takes the message (and, for a call,
    until the reply comes back).  ``timer`` learns what a call blocks on (see
    :class:`Timed`).  A call answered in place yields once per ``IN_PLACE_YIELD`` in a
    row of the caller's (:mod:`capkern._inplace`), or every time if ``yields``.  Only
    a ``bounded`` send is refused for a full endpoint (see :func:`._queue.enqueue`)."""
    if answering is not None:
        refuse_in_answer("a call" if call else "a send")
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    k = dom.kernel
    if k.trace.enabled:
        trace_op(dom, "call" if call else "send", ep, msg.label, msg.badge, len(msg._raw),
               len(msg.cap_src), msg)
    await checkpoint_if_cancelled()
    if cap.cspace is None:  # removed since the lookup: its badge must not be delivered
        raise CapabilityRevoked(f"{ep.label()}: the capability was removed before sending")
    me = current_task()
    if ep.receivers:
        if call:
            reply = call_now(dom, cap, msg, timer, me)
            assert reply is not None
            if reply.state is _WAITING:
                return await wait_task_rescheduled(reply._caller_cancelled)  # type: ignore[no-any-return]
            dom.in_place_run += 1  # answered in place: the caller has not yielded
            if yields or dom.in_place_run >= IN_PLACE_YIELD:
                dom.in_place_run = 0
                await cancel_shielded_checkpoint()
            return reply.answered()
        waiter = ep.receivers.popleft()
        waiter.cap.unblock(waiter)
        k.stats.ipc_sends += 1
        _wake(waiter, msg if not msg.cap_src and not msg.flow else deliver(msg, waiter.dom))
        await cancel_shielded_checkpoint()
        return None
    blocked = enqueue(me, dom, ep, cap, msg, call, bool(cap.rights._value_ & _GRANT), bounded)
    if timer is not None:
        timer.waiting = blocked
    if call:
        k.stats.ipc_calls += 1
    else:
        k.stats.ipc_sends += 1
    return await wait_task_rescheduled(blocked.aborted)  # type: ignore[no-any-return]


def call_now(dom: Party, cap: Cap, msg: Message, timer: Timed | None,
             me: Task | None = None) -> ReplyObject | None:
    """:func:`send`'s direct call as a plain function, for a caller past its cancellation
    checkpoint: hand ``msg`` to a waiting receiver and return the reply object to wait on
    (``wait_task_rescheduled(reply._caller_cancelled)``), no coroutine of send's own;
    None, nothing changed, for anything else (then :func:`send`, which traces first).  A
    receiver that offered the call's label answers it here (:mod:`capkern._inplace`):
    the reply object then comes back no longer ``WAITING`` -- take ``answered()``."""
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    if not ep.receivers or cap.cspace is None or (me is None and dom.kernel.trace.enabled):
        return None
    waiter = ep.receivers[0]
    to = waiter.dom
    offer = waiter.offer
    if offer is not None and msg.label in offer.labels and to.reply is None \
            and not msg.cap_src:  # answered at this trap: used up unless the answer raised
        return offer.serve(dom, cap, msg, waiter, me, timer)
    ep.receivers.popleft()
    blocked_on = waiter.cap.blocked  # waiter.cap.unblock(waiter), inlined
    if blocked_on is not None:
        blocked_on.pop(waiter, None)
    dom.kernel.stats.ipc_calls += 1
    reply = ReplyObject(me or current_task(), dom, msg.label, ep.contract,
                        bool(cap.rights._value_ & _GRANT))
    old = to.reply
    if old is not None and old.state is _WAITING:
        to.set_reply(reply)  # aborts the previous caller
    else:
        to.reply = reply
    reply.carried = msg if not msg.cap_src and not msg.flow else deliver(msg, to)
    reschedule(waiter.task, reply)  # type: ignore[arg-type]  # it unwraps to the request
    to.spare = waiter
    if timer is not None:
        timer.waiting = reply
    return reply


def nbsend(dom: Party, cap: Cap, msg: Message) -> bool:
    """Deliver only if a receiver is waiting; otherwise drop.  Never blocks."""
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    if dom.kernel.trace.enabled:
        trace_op(dom, "nbsend", ep, msg.label, msg.badge, len(msg._raw), len(msg.cap_src), msg)
    if not ep.receivers:
        return False
    waiter = ep.receivers.popleft()
    waiter.cap.unblock(waiter)
    dom.kernel.stats.ipc_sends += 1
    _wake(waiter, deliver(msg, waiter.dom))
    return True


async def recv(dom: Party, cap: Cap, offer: InPlace | None = None) -> Received:
    """Take the next message from an endpoint, waiting for one if none is queued (while
    it waits, calls for the labels of ``offer`` are answered in place)."""
    if answering is not None:
        refuse_in_answer("a receive")
    ep: Endpoint = cap.obj  # type: ignore[assignment]
    if cap.cspace is None:  # removed since the lookup (a receive held, then awaited)
        raise CapabilityRevoked(f"{ep.label()}: the capability was removed before receiving")
    dom.kernel.stats.ipc_receives += 1
    pending = dom.reply
    refused = pending is not None and pending.refused
    if refused or ep.senders:
        # something changes before the receive can block: a cancelled receiver must not
        # get that far.  (When it blocks at once no check is needed: trio delivers a
        # pending cancellation as the task blocks, and the abort callback withdraws it.)
        await checkpoint_if_cancelled()
    if refused:
        assert pending is not None
        # its reply was refused and it receives again instead of answering: it has given
        # the caller up (an unrefused pending reply survives until the next call arrives)
        dom.reply = None
        pending.abort(f"server {dom.name!r} received again without replying")
    if ep.senders:
        sender = take(ep)
        msg = sender.msg
        got = msg if not msg.cap_src and not msg.flow else deliver(msg, dom)
        if sender.want_reply:
            reply = ReplyObject(sender.task, sender.dom, msg.label, ep.contract, sender.grant)
            sender.reply = reply
            old = dom.reply
            if old is not None and old.state is _WAITING:
                dom.set_reply(reply)  # aborts the previous caller
            else:
                dom.reply = reply
        else:
            reschedule(sender.task, Delivered(None))
        await cancel_shielded_checkpoint()
        return got
    me = dom.spare
    if me is None:
        me = _Receiver(current_task(), dom, ep, cap, offer)
    else:  # no sender or endpoint holds it any more (see _wake): this receive's now
        dom.spare = None
        me.task, me.ep, me.cap, me.offer = current_task(), ep, cap, offer
    ep.receivers.append(me)
    cap.block(me)
    dom.in_place_run = 0  # it yields here: its run of calls answered in place ends
    return await wait_task_rescheduled(me.aborted)  # type: ignore[no-any-return]


def _wake(waiter: _Receiver, got: Received) -> None:
    """Hand ``got`` to a receiver taken off its endpoint (and its capability's blocked
    set), then keep it as its domain's spare: trio's reschedule drops the abort callback,
    so nothing else refers to it now."""
    reschedule(waiter.task, Delivered(got))
    waiter.dom.spare = waiter
