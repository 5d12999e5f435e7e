"""Replies: the one-shot answer to a call, checked in full before anything changes
(kernel side of IPC).

A reply is checked completely before anything changes (:func:`check_reply`).  A refused
reply leaves the reply capability with the replier, which gets the typed error and may
answer again; if it never does (it ends, drops the capability or receives again), the
caller's :class:`~capkern.errors.ReplyRefused` names the cause.  A reply carries
capabilities only if the caller's capability had the grant right and, on a contracted
endpoint, the operation declares them (``Op.reply_caps``); any other reply with
capabilities is counted as an attack (``stats.unsolicited_caps``, an
``unsolicited_caps`` event).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trio.lowlevel import reschedule

from . import _ipc as ipc
from . import _wire as wire
from ._contract import Contract
from ._ipc import Party, ReplyObject, deliver, trace_op
from ._message import _NO_CAPS, UNDECODED, Message
from ._states import ReplyState, move
from .errors import ContractViolation, ReplyError, TooManyCaps

__all__ = ["check_reply", "deliver_reply", "reply", "use_reply"]

#: reply states as module constants: no enum class lookups on the fast path
_WAITING, _DONE, _ABORTED = ReplyState.WAITING, ReplyState.DONE, ReplyState.ABORTED


def check_reply(
    dom: Party,
    reply_obj: ReplyObject,
    label: str,
    body: Any,
    raw: bytes | None,
    cap_slots: Sequence[int],
) -> Message:
    """Decode phase of a reply: every check, nothing changes.  A refused reply raises
    the typed error to the replier and leaves ``reply_obj`` unused, remembering why, so
    the caller's error names the cause if the replier never answers correctly."""
    k = dom.kernel
    state = reply_obj.state
    if state is _DONE:
        raise ReplyError("this reply capability was already used")
    if state is _ABORTED:
        raise ReplyError("this reply capability was aborted")
    contract = reply_obj.contract
    if type(label) is str and label == "ok" and raw is None and not cap_slots \
            and contract is not None:  # (an exact str: the full path checks any other)
        # the common reply, checked in fewer steps: an ``ok`` body with no capabilities
        # to an operation whose reply schema is closed (:func:`capkern._contract.closed`)
        # and within the depth limit, encoded without the shape walk, passes its compiled
        # test; anything else -- a refusal included -- the full path below checks (and
        # explains) from the start
        op = contract.ops.get(reply_obj.request_label)
        limits = k.limits
        if op is not None and op.reply_closed and op.reply_depth <= limits.max_depth:
            passed = ipc.encode_if_valid(body, limits, op.reply_valid)
            if passed is not None:
                return Message("ok", passed[0], passed[1], 0, _NO_CAPS)
    try:
        if type(label) is not str or not label or len(label) > k.limits.max_label_len:
            label = ipc.plain_label(label, k.limits)  # a copy, or MalformedMessage
        if cap_slots:
            if not reply_obj.grant:
                _unsolicited(dom, len(cap_slots), "the caller's capability lacks grant")
                raise ReplyError(
                    f"reply carries {len(cap_slots)} capabilities, but the caller's "
                    "capability lacks the grant right: it cannot receive capabilities")
            if len(cap_slots) > k.limits.max_caps:
                raise TooManyCaps(f"{len(cap_slots)} capabilities; at most {k.limits.max_caps}")
            allowed = _reply_caps(contract, reply_obj.request_label)
            if len(cap_slots) > allowed:
                assert contract is not None
                _unsolicited(dom, len(cap_slots), f"contract allows {allowed}")
                raise ContractViolation(
                    f"{contract.name}.{reply_obj.request_label} reply carries at most "
                    f"{allowed} capabilities, not {len(cap_slots)}")
        caps = [dom.cspace.lookup(s) for s in cap_slots] if cap_slots else _NO_CAPS
        unwalked = False
        if raw is None:
            if contract is not None and contract.closed_reply(
                    reply_obj.request_label, label, k.limits.max_depth):
                raw, value = wire.encode_unwalked(body, k.limits)  # the schema walks it
                unwalked = True
            else:
                raw = wire.encode(body, k.limits)
                value = UNDECODED
        else:
            value = wire.decode_untrusted(raw, k.limits)
            raw = bytes(raw)
    except Exception as exc:
        k.stats.messages_rejected += 1
        reply_obj.refused = _cause(exc)
        raise
    if contract is not None:
        if value is UNDECODED:
            value = wire.decode(raw)
        try:
            contract.check_reply(reply_obj.request_label, label, value)
        except ContractViolation as exc:
            if unwalked:
                _walk(dom, reply_obj, body)  # a wire-level fault is reported as itself
            k.stats.contract_violations += 1
            reply_obj.refused = f"out of contract: {exc}"
            raise
        if not unwalked and not contract.builtin_reply(reply_obj.request_label, label):
            value = UNDECODED  # a program's schema node saw it: the caller decodes its own
    return Message(label, raw, value, 0, caps)


def _walk(dom: Party, reply_obj: ReplyObject, body: Any) -> None:
    """Raise the wire-level error of a refused body that was not walked, if it has one."""
    try:
        wire.encode(body, dom.kernel.limits)
    except Exception as exc:
        dom.kernel.stats.messages_rejected += 1
        reply_obj.refused = _cause(exc)
        raise exc from None


def deliver_reply(dom: Party, reply_obj: ReplyObject, msg: Message) -> bool:
    """Invoke phase of a reply (after :func:`check_reply`): use up the reply object and
    wake the caller.  False if the caller had already gone (the reply is dropped)."""
    if not use_reply(dom, reply_obj, msg):
        return False
    reschedule(reply_obj.caller, reply_obj)  # type: ignore[arg-type]  # unwraps to the answer
    return True


def use_reply(dom: Party, reply_obj: ReplyObject, msg: Message) -> bool:
    """:func:`deliver_reply` but the wake-up: use up the reply object, leaving the
    caller's view of the answer in it (``carried``).  False if the caller had gone.  A
    call answered in place (:mod:`._inplace`) ends here: its caller never slept."""
    k = dom.kernel
    k.stats.ipc_replies += 1
    if k.trace.enabled:
        trace_op(dom, "reply", reply_obj, msg.label, 0, len(msg._raw), len(msg.cap_src), msg)
    state = reply_obj.state
    if state is not _WAITING:
        reply_obj.state = move(state, _DONE)  # GONE: the caller left, the reply is dropped
        return False
    reply_obj.state = _DONE
    reply_obj.carried = msg if not msg.cap_src and not msg.flow \
        else deliver(msg, reply_obj.caller_dom)
    return True


def reply(
    dom: Party,
    reply_obj: ReplyObject,
    label: str,
    body: Any,
    raw: bytes | None,
    cap_slots: Sequence[int],
) -> bool:
    """Answer a call through its one-shot reply object: :func:`check_reply`, then
    :func:`deliver_reply`."""
    return deliver_reply(dom, reply_obj, check_reply(dom, reply_obj, label, body, raw, cap_slots))


def _reply_caps(contract: Contract | None, request_label: str) -> int:
    """How many capabilities a reply may carry: the contract's word, or any number."""
    if contract is None:
        return 1 << 30
    return contract.ops[request_label].reply_caps


def _unsolicited(dom: Party, n: int, why: str) -> None:
    """A reply tried to push capabilities on a caller that did not ask: an attack."""
    k = dom.kernel
    k.stats.unsolicited_caps += 1
    k.event("unsolicited_caps", dom, f"reply with {n} capabilities refused ({why})")


def _cause(exc: Exception) -> str:
    """What a caller learns about its server's refused reply: the kind of mistake, not
    the server's slots or names."""
    if isinstance(exc, ReplyError):
        return "it carried capabilities, but the call's capability lacks the grant right"
    if isinstance(exc, ContractViolation):
        return "it carried capabilities its contract does not declare"
    return f"{type(exc).__name__}"
