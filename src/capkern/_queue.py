"""The queued IPC path: a sender blocked on an endpoint until a receiver takes its message.

When no receiver waits, :func:`capkern._ipc.send` queues the sender here (FIFO, bounded by
``Limits.max_queued_senders`` per endpoint) and it pays its ``queued`` quota until a
receiver takes the message (:func:`take`) or the send is withdrawn -- cancelled, timed
out by the watchdog, or failed because the capability it blocked through was removed.
At scale this is the common path, not the exception: a server busy with one fault's
request when the kernel calls it for the next finds the request queued.  So it builds
as few objects as the direct path: one :class:`QueuedSender` per send (its abort
callback a bound method, no closure), the quota counted in place, the message
delivered as itself when it carries no capabilities, and the sender woken with a
:class:`~capkern._message.Delivered`.

A queued message waits as its bytes only (its decoded body is dropped, so a blocked
sender pins no decoded objects) and is decoded when taken, for the receiver alone.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import outcome
from trio.lowlevel import Abort, Task, reschedule

from . import _wire as wire
from ._message import UNDECODED, Message
from ._states import ReplyState, move
from .errors import CapabilityRevoked, QueueFull

if TYPE_CHECKING:
    from ._cspace import Cap
    from ._quota import Usage
    from ._services import KernelView

__all__ = ["QueuedSender", "Queue", "enqueue", "take"]

_GONE = ReplyState.GONE


class Sender(Protocol):
    """What the queue needs of the sending domain (an IPC ``Party`` is one)."""

    pid: int
    usage: Usage

    @property
    def kernel(self) -> KernelView: ...


class Reply(Protocol):
    """What the queue needs of the reply object made for a taken call."""

    state: ReplyState

    def time_out(self, exc: Exception) -> bool: ...


D = TypeVar("D", bound=Sender)


class Queue(Protocol[D]):
    """What the queue needs of the endpoint (an IPC ``Endpoint`` is one)."""

    senders: deque[QueuedSender[D]]

    def label(self) -> str: ...


class QueuedSender(Generic[D]):
    """A sender blocked on an endpoint through ``cap`` until a receiver takes ``msg``
    (and, for a call, until the reply comes: the receiver sets ``reply``)."""

    __slots__ = ("cap", "dom", "ep", "grant", "msg", "reply", "task", "want_reply")

    def __init__(self, task: Task, dom: D, ep: Queue[D], cap: Cap, msg: Message,
                 want_reply: bool, grant: bool) -> None:
        self.task = task
        self.dom = dom
        self.ep = ep
        self.cap = cap
        self.msg = msg
        self.want_reply = want_reply
        self.grant = grant
        self.reply: Reply | None = None

    def _withdraw(self) -> None:
        """Take the message back off the queue (never delivered), and the quota."""
        self.ep.senders.remove(self)
        self.cap.unblock(self)
        self.dom.usage.unqueue()

    def aborted(self, _: Any) -> Abort:
        """The sender was cancelled (``wait_task_rescheduled``'s abort callback): a
        queued message is withdrawn; a call already taken drops its late reply."""
        if self.reply is not None:
            self.reply.state = move(self.reply.state, _GONE)
        else:
            self._withdraw()
        return Abort.SUCCEEDED

    def cancel(self, why: str) -> None:
        """The capability it blocked through was removed: fail the send (the message,
        not yet delivered, never will be)."""
        self.ep.senders.remove(self)
        self.dom.usage.unqueue()
        self.dom.kernel.stats.ipc_cancelled += 1
        reschedule(self.task, outcome.Error(CapabilityRevoked(why)))

    def time_out(self, exc: Exception) -> bool:
        """A call's deadline passed: fail it with ``exc`` if it still waits -- queued
        (the message is withdrawn) or for its reply."""
        if self.reply is not None:
            return self.reply.time_out(exc)
        if self not in self.ep.senders:  # delivered or cancelled meanwhile: no longer ours
            return False
        self._withdraw()
        reschedule(self.task, outcome.Error(exc))
        return True


def enqueue(task: Task, dom: D, ep: Queue[D], cap: Cap, msg: Message, call: bool,
            grant: bool, bounded: bool = True) -> QueuedSender[D]:
    """Queue ``msg`` (no receiver waits): the sender is charged its ``queued`` quota and
    registered on ``cap`` (so removing it fails the send).  The caller then blocks in
    ``wait_task_rescheduled(blocked.aborted)`` until a receiver takes it (a send: woken
    with None) and, for a call, until the reply comes.  :class:`QueueFull` or
    :class:`QuotaExceeded` change nothing.  A call the kernel makes for a fault
    (``bounded=False``) is not refused for a full endpoint: those are bounded by the
    tasks faulting, each by its deadline, and a queue full of them is no attack (a full
    queue must not fail a fault while the pager is healthy)."""
    senders = ep.senders
    if bounded and len(senders) >= dom.kernel.limits.max_queued_senders:
        raise QueueFull(f"{ep.label()} already has {len(senders)} blocked senders")
    dom.usage.queue()  # the sender pays for its message while it waits
    msg.body = UNDECODED  # queued as bytes only: decoded when taken (see take)
    blocked = QueuedSender(task, dom, ep, cap, msg, call, grant)
    senders.append(blocked)
    blocked_on = cap.blocked  # cap.block(blocked), inlined
    if blocked_on is None:
        cap.block(blocked)
    else:
        blocked_on[blocked] = None
    return blocked


def take(ep: Queue[D]) -> QueuedSender[D]:
    """The first queued sender, off the queue (and its capability's blocked set), its
    quota released and its message decoded from the bytes for the receiver alone."""
    sender = ep.senders.popleft()
    blocked_on = sender.cap.blocked  # sender.cap.unblock(sender), inlined
    if blocked_on is not None:
        blocked_on.pop(sender, None)
    sender.dom.usage.unqueue()
    msg = sender.msg
    msg.body = wire.decode(msg._raw)
    return sender
