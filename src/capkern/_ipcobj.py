"""IPC's kernel objects: endpoints, one-shot reply objects, receivers blocked on an
endpoint, and what IPC needs of a protection domain (:class:`Party`).  The operations on
them -- send, call, receive, reply -- are :mod:`._ipc` and :mod:`._reply`; a call
answered in place is :mod:`._inplace`."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import outcome
from trio.lowlevel import Abort, Task, reschedule

from ._contract import Contract
from ._cspace import Cap, CSpace, KObject, Rights, _oids
from ._message import Message, Received
from ._queue import QueuedSender
from ._states import ReplyState, move
from .errors import CallAborted, CapabilityRevoked, ReplyRefused

if TYPE_CHECKING:
    from ._quota import Usage
    from ._services import KernelView

__all__ = ["Endpoint", "InPlace", "Party", "ReplyObject", "Timed", "Waiting"]

#: the grant right as a plain int: IntFlag operators are slow on the IPC fast path
_GRANT = Rights.GRANT._value_
#: reply states as module constants: no enum class lookups on the fast path
_WAITING, _DONE, _GONE, _ABORTED = (ReplyState.WAITING, ReplyState.DONE, ReplyState.GONE,
                                    ReplyState.ABORTED)


class Party(Protocol):
    """What IPC needs of a protection domain (:class:`capkern._domain.Domain` is one)."""

    pid: int
    name: str
    cspace: CSpace
    usage: Usage
    reply: ReplyObject | None
    spare: _Receiver | None
    in_place_run: int  # its calls answered in place since it last yielded for them

    @property
    def kernel(self) -> KernelView: ...

    def set_reply(self, reply: ReplyObject) -> None: ...


class ReplyObject(KObject):
    """The one-shot right to answer one call.  Used once, then dead."""

    kind = "Reply"

    __slots__ = ("caller", "caller_dom", "carried", "contract", "grant", "refused",
                 "request_label", "state")

    def __init__(
        self,
        caller: Task,
        caller_dom: Party,
        request_label: str,
        contract: Contract | None,
        grant: bool,
    ) -> None:
        # KObject.__init__, inlined: one reply object per call
        self.oid = next(_oids)
        self.name = ""
        self.refs = 0
        self.owner = None
        self.caller = caller
        self.caller_dom = caller_dom
        self.request_label = request_label
        self.contract = contract
        self.grant = grant
        self.state = _WAITING  # see states.MOVES
        self.refused = ""  # why the replier's last reply was refused, for the caller
        self.carried: Received | None = None  # see unwrap

    def unwrap(self) -> Received:
        """What it carries, taken once.  A call's reply object stands in for the
        ``outcome.Value`` of both its wake-ups (one object less each): it carries the
        request to the server it wakes, then the answer to the caller -- the server
        always takes the one before the other can be made."""
        carried, self.carried = self.carried, None
        if carried is None:
            raise outcome.AlreadyUsedError
        return carried

    def _caller_cancelled(self, _: Any) -> Abort:
        """The caller was cancelled while waiting (``wait_task_rescheduled``'s abort
        callback): a late answer will be dropped."""
        self.state = move(self.state, _GONE)
        return Abort.SUCCEEDED

    def abort(self, why: str) -> None:
        """The holder died or dropped it: wake the caller with :class:`CallAborted`
        (:class:`ReplyRefused`, naming the cause, if its reply had been refused)."""
        if self.state is _WAITING:
            self.state = _ABORTED
            exc = self._refusal() if self.refused else CallAborted(why)
            reschedule(self.caller, outcome.Error(exc))

    def _refusal(self) -> ReplyRefused:
        return ReplyRefused(f"the server's reply was refused ({self.refused}) and it did "
                            "not answer again")

    def answered(self) -> Received:
        """The answer of a call answered in place (:mod:`capkern._inplace`; its caller
        never slept): the reply, or, for a refused one, the caller's error."""
        if self.state is _DONE:
            return self.unwrap()
        raise self._refusal()

    def time_out(self, exc: Exception) -> bool:
        """The call's deadline passed: wake the caller with ``exc`` if it still waits
        (a reply that comes later is dropped, as for a caller that was cancelled)."""
        if self.state is not _WAITING:
            return False
        self.state = _GONE
        reschedule(self.caller, outcome.Error(exc))
        return True


class _Receiver:
    """A receiver blocked on an endpoint through ``cap`` (every server waits this way
    between two requests).  Once a sender has taken it off its endpoint it is its
    domain's spare (``Party.spare``), filled in again by that domain's next blocking
    receive instead of a new one per request; ``aborted`` is its abort callback, bound
    once."""

    __slots__ = ("aborted", "cap", "dom", "ep", "offer", "task")

    def __init__(self, task: Task, dom: Party, ep: Endpoint, cap: Cap,
                 offer: InPlace | None) -> None:
        self.task = task
        self.dom = dom
        self.ep = ep
        self.cap = cap
        self.offer = offer  # answers it offers while it waits (capkern._inplace)
        self.aborted = self._receiver_cancelled

    def _receiver_cancelled(self, _: Any) -> Abort:
        """The receiver was cancelled (``wait_task_rescheduled``'s abort callback)."""
        self.ep.receivers.remove(self)
        self.cap.unblock(self)
        return Abort.SUCCEEDED

    def cancel(self, why: str) -> None:
        """The capability it blocked through was removed: fail the receive."""
        self.ep.receivers.remove(self)
        self.dom.kernel.stats.ipc_cancelled += 1
        reschedule(self.task, outcome.Error(CapabilityRevoked(why)))


class InPlace(Protocol):
    """Answers a receiver offers while it waits (:class:`capkern._inplace.Offer`)."""

    @property
    def labels(self) -> frozenset[str]: ...

    def serve(self, dom: Party, cap: Cap, msg: Message, waiter: _Receiver,
              me: Task | None, timer: Timed | None) -> ReplyObject:
        """Answer the call ``msg`` at the caller's trap."""
        ...


class Waiting(Protocol):
    """What a call blocks on (its queued message, or its reply object)."""

    def time_out(self, exc: Exception) -> bool:
        """Fail the call with ``exc`` if it still waits; whether it did."""
        ...


class Timed(Protocol):
    """A call with a deadline kept outside trio's cancel scopes (the kernel's watchdog,
    :mod:`capkern.mmu._watchdog`): :func:`send` records what the caller blocks on, so the
    watchdog can fail exactly that wait (``time_out``) once the deadline passes."""

    waiting: Waiting | None


class Endpoint(KObject):
    """A rendezvous point for messages, optionally bound to a :class:`Contract`."""

    kind = "Endpoint"

    def __init__(self, name: str = "", contract: Contract | None = None) -> None:
        super().__init__(name)
        self.contract = contract
        self.senders: deque[QueuedSender[Party]] = deque()
        self.receivers: deque[_Receiver] = deque()
