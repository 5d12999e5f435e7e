"""Calls answered in place: a waiting server's plain answers run at the caller's trap
(kernel side of IPC).

seL4's IPC fastpath switches from a caller straight to the server waiting for it, and
back, without going through the scheduler.  Trio has no such switch: a task wakes another
only through the run loop, so a call and its answer cost the server one task step and the
caller another, each a pass of the loop -- on one process's fault path, most of a fault's
time was those passes, not the work.

Some answers need no task of their own.  A server whose answer to a request is a plain
function of the request (the sealer's ``seal`` and ``unseal``, a memory disk's ``read``
and ``write``: :func:`capkern._serverloop.immediate`) may *offer* those answers with each
receive it makes (:meth:`capkern.Process.offer`; the server loop does it for its
immediate handlers).  While it waits in that receive, a call for one of the offered labels
is answered at the caller's trap, by the server's function, and the caller goes on without
sleeping.  Nothing else about the call changes:

* the caller's capability is looked up and checked, and the request crosses as msgpack
  bytes: the server reads the body decoded from them, exactly as it would receive it;
* the answer is the server's reply, made through the server's own domain: checked in full
  at the reply trap (wire limits, the contract), encoded, and read back for the caller.  A
  reply the kernel refuses is the caller's :class:`~capkern.errors.ReplyRefused` and the
  server's ``on_refused``, as when a server loop's reply is refused and it receives again;
* an error the server answers as a typed error reply is that reply;
* any other exception of the answer is the server's bug: it is raised in the server's own
  task, from the receive it waits in, so the server ends as if its handler had raised
  there, and the caller is failed by that end (:class:`~capkern.errors.CallAborted`) --
  except ``RecursionError``: the answer runs on the caller's stack, which a caller may
  have all but used up, so that call is handed over to the server's task instead;
* the server's code (the answer, what its result runs as the kernel encodes it,
  ``on_refused``) runs on the *caller's* task, so nothing it drives there may block: a
  receive, send, call, wait, revoke or memory access through its handle is refused with
  :class:`~capkern.errors.IPCError` (:func:`capkern._ipc.refuse_in_answer`) -- begun, it
  would park the caller's task where the server's should be, and the next message to
  the server would wake the caller in the middle of something else;
* the answer runs in the server's own context (its task's context variables, such as
  :mod:`decimal`'s arithmetic context), not its caller's: neither sees the other's;
* the counts (``ipc_calls``, ``ipc_receives``, ``ipc_replies``, and ``ipc_in_place`` for
  these) and, when tracing, the call, delivery and reply records are those of the call
  it stands for.

A call is answered in place only when all of these hold; anything else is the ordinary
hand-off to the server's task: the server waits in a receive on the called endpoint and
offered the call's label with it, owes no other caller a reply, and the call carries no
capabilities.  So a server busy with a request that waits (a slow disk, an attacker's
delay) gets its calls as before, and an answer can never reach the server's reply slot.

Scheduling: a caller answered in place has not yielded.  The kernel's pager calls yield
all the same (a fault always yields); a domain's :meth:`~capkern.Process.call` yields once
:data:`~capkern._ipc.IN_PLACE_YIELD` calls were answered in place since it last blocked in
a receive or yielded for them, so a program that only calls such a server cannot starve
the others.  An answer runs at the caller's step,
as a handler runs at the server's: it must not block the loop for long either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import outcome
from trio.lowlevel import Task, current_task, reschedule

from . import _ipc
from ._ipc import IN_PLACE_YIELD, deliver
from ._ipcobj import _GRANT, Party, ReplyObject, Timed
from ._message import Received
from ._reply import check_reply, use_reply
from ._states import ReplyState
from ._wire import decode
from .errors import CapkernError, ConfigError

if TYPE_CHECKING:
    from ._cspace import Cap
    from ._ipcobj import Endpoint, _Receiver
    from ._message import Message

__all__ = ["IN_PLACE_YIELD", "Answer", "Offer", "Refused"]

Answer = Callable[[str, Any], tuple[str, Any]]
"""``answer(label, body) -> (reply label, reply body)``: ``("ok", body)``, or the typed
error ``("error", {"reason": ..., "detail": ...})``; raising is the server's bug."""

Refused = Callable[[CapkernError], None]
"""Told, in the server's terms, why the kernel refused an answer (as a loop's
``on_refused``)."""

_WAITING, _ABORTED = ReplyState.WAITING, ReplyState.ABORTED


class Offer:
    """Answers a server offers with its receives: the request labels, and the plain
    function that answers them (see the module docstring).  Made by
    :meth:`capkern.Process.offer`, once per server loop."""

    __slots__ = ("_answer", "_labels", "_on_refused")

    def __init__(self, labels: Iterable[str], answer: Answer,
                 on_refused: Refused | None = None) -> None:
        if isinstance(labels, str):
            raise ConfigError("labels must be a collection of request labels, not one str")
        try:
            names = frozenset(labels)
        except TypeError:
            raise ConfigError(
                f"labels must be a collection of str, not {type(labels).__name__}") from None
        if not all(type(n) is str and n for n in names):
            raise ConfigError("every offered label must be a non-empty str")
        if not callable(answer):
            raise ConfigError(f"answer must be callable, not {type(answer).__name__}")
        if on_refused is not None and not callable(on_refused):
            raise ConfigError(f"on_refused must be callable, not {type(on_refused).__name__}")
        self._labels: frozenset[str] = names
        self._answer = answer
        self._on_refused = on_refused

    # read-only: the kernel tests ``labels`` at every caller's trap, where a collection
    # swapped in later could run the server's code (``__contains__``) outside any answer
    @property
    def labels(self) -> frozenset[str]:
        """The request labels offered (exact non-empty ``str``)."""
        return self._labels

    @property
    def answer(self) -> Answer:
        return self._answer

    @property
    def on_refused(self) -> Refused | None:
        return self._on_refused

    def __repr__(self) -> str:
        return f"<Offer {sorted(self._labels)}>"

    def serve(self, dom: Party, cap: Cap, msg: Message, waiter: _Receiver,
              me: Task | None, timer: Timed | None) -> ReplyObject:
        """Answer ``msg``, a call from ``dom`` through ``cap``, on the caller's task, for
        ``waiter`` (the server's receive, first on the endpoint, left waiting).  The reply
        object comes back used (``DONE``: its answer), refused (``ABORTED``), or, if the
        answer raised, handed to the server as a call it received (``WAITING``: the caller
        waits on it as on any call, and the server's end fails it)."""
        ep: Endpoint = cap.obj  # type: ignore[assignment]
        to = waiter.dom
        stats = dom.kernel.stats
        stats.ipc_calls += 1
        stats.ipc_receives += 1
        stats.ipc_in_place += 1
        reply = ReplyObject(me or current_task(), dom, msg.label, ep.contract,
                            bool(cap.rights._value_ & _GRANT))
        got = deliver(msg, to) if msg.flow else msg  # (no capabilities: see call_now)
        # The server's code runs from here to the reply check (the answer, the code its
        # result runs as it is encoded, on_refused): on the caller's task, so nothing it
        # drives by hand may block there (ipc.refuse_in_answer); and no call is answered
        # in place inside it.  It runs in the server's own context (its task's context
        # variables: decimal's arithmetic context...), not its caller's
        outer, _ipc.answering = _ipc.answering, to
        waiter.offer = None
        try:
            try:
                answer = waiter.task.context.run(self._answered, to, reply, got.body)
                if answer is None:  # refused
                    reply.state = _ABORTED
                    return reply
            finally:
                _ipc.answering = outer
                waiter.offer = self
        except RecursionError:  # the caller's stack had no room: its doing, not a bug
            return _hand_over(ep, waiter, reply, msg, timer)
        except BaseException as exc:  # the server's bug: it ends in its own task
            return _raise_in_server(ep, waiter, reply, exc, timer)
        use_reply(to, reply, answer)
        return reply

    def _answered(self, to: Party, reply: ReplyObject, body: Any) -> Message | None:
        """The server's answer to ``body``, checked at its reply trap; None, the server
        told (``on_refused``), if the kernel refused it."""
        label, result = self._answer(reply.request_label, body)
        try:
            return check_reply(to, reply, label, result, None, ())
        except CapkernError as exc:  # refused: the server is told, the caller fails
            if self._on_refused is not None:
                self._on_refused(exc)
            return None


def _hand_over(ep: Endpoint, waiter: _Receiver, reply: ReplyObject, msg: Message,
               timer: Timed | None) -> ReplyObject:
    """The answer ran out of stack: it runs on the caller's, and a caller can call from
    near the recursion limit -- which must not end the server (every other client would
    lose it).  The call is handed to the server's task after all, as :func:`call_now`
    hands over any other: answered on the server's own stack (where a real recursion
    bug of the server ends it, as always), with a fresh decode of the request (the
    answer may have changed the one it read)."""
    waiter.dom.kernel.stats.ipc_in_place -= 1  # not answered in place after all
    request = Received(msg.label, msg._raw, decode(msg._raw), msg.badge, ())
    return _give(ep, waiter, reply, request, timer)


def _raise_in_server(ep: Endpoint, waiter: _Receiver, reply: ReplyObject,
                     exc: BaseException, timer: Timed | None) -> ReplyObject:
    """Raise ``exc`` in the server's task, from the receive it waits in, holding the call's
    reply object as if it had received the call: its end then fails the caller, exactly as
    when a handler raises in its own task."""
    return _give(ep, waiter, reply, exc, timer)


def _give(ep: Endpoint, waiter: _Receiver, reply: ReplyObject,
          wake: Received | BaseException, timer: Timed | None) -> ReplyObject:
    """Hand the call to the server's waiting receive after all, the server then holding
    its reply object as for any call it received: woken with the request, or with
    ``wake`` raised from its receive.  The caller waits on the reply object (``WAITING``)
    -- unless the answer itself ended that receive (it revoked its capability, sent to
    itself...): then the caller's call is refused (``ABORTED``)."""
    to = waiter.dom
    # the call goes to the receive that is waiting, counted when it began (or to none)
    to.kernel.stats.ipc_receives -= 1
    if waiter not in ep.receivers:
        if isinstance(wake, BaseException):
            to.kernel.event("internal_error", to,
                            f"an answer in place raised {wake!r} after its receive had ended")
            reply.refused = f"its answer in place raised {type(wake).__name__}"
        else:
            reply.refused = "its receive ended inside its answer in place"
        reply.state = _ABORTED
        return reply
    ep.receivers.remove(waiter)
    waiter.cap.unblock(waiter)
    if to.reply is not None:
        to.set_reply(reply)
    else:
        to.reply = reply
    if isinstance(wake, BaseException):
        reschedule(waiter.task, outcome.Error(wake))
    else:
        reply.carried = wake
        reschedule(waiter.task, reply)  # type: ignore[arg-type]  # it unwraps to the request
    to.spare = waiter
    if timer is not None:
        timer.waiting = reply
    return reply
