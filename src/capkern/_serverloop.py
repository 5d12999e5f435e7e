"""One server loop for every system server: receive a request, run the handler its
label names, answer with the handler's result or the contract's typed error reply.

The pager, the block device and the sealer each describe their server as a *table*:
a mapping from request label to an async handler taking the request body.  A handler
answers by returning the ``ok`` body, fails the request by raising
:class:`~capkern.errors.ServerError` (or an exception its server maps to a reason), or
returns :data:`DEFERRED` when it has answered itself (or saved the caller to answer
later, seL4's ``save_caller`` pattern).  A handler that never waits can be made
:func:`immediate`: the loop then calls it with no coroutine per request.

The loop holds no kernel reference: it talks to the world through a
:class:`ServerPort` -- anything with ``recv``/``reply``/``reply_error``, such as a
domain's :class:`~capkern._proc.Process` handle -- so the same table can be served over
another transport (a child process, a socket) and restarted by a supervisor.  This
module imports only :mod:`capkern.errors`: the TCB (the sealer) and the untrusted servers
use it alike.

What the loop guarantees, for every server:

* an exception the server maps to a reason becomes the typed ``error`` reply
  ``{reason, detail}``, its detail clipped to :data:`MAX_DETAIL` characters so the error
  itself always fits the contract; any other exception ends the server (its domain
  fails, and the kernel contains that);
* a label with no handler gets the typed error ``unsupported`` (on a contracted endpoint
  the kernel refuses such a request before it arrives);
* a reply that cannot cross (too big, out of contract, a caller gone) is *contained*:
  the kernel has already failed the caller with a typed error, the server is told
  through ``on_refused`` and goes on serving.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NoReturn, Protocol

from .errors import CapkernError, ServerError

__all__ = [
    "DEFERRED",
    "MAX_DETAIL",
    "UNSUPPORTED",
    "ErrorMap",
    "Handler",
    "Request",
    "ServerPort",
    "Table",
    "around",
    "clip_detail",
    "error_reply",
    "immediate",
    "serve",
    "serve_one",
]

MAX_DETAIL: Final = 256
"""Longest ``detail`` an error reply carries (the contract allows 1024)."""

UNSUPPORTED: Final = "unsupported"
"""The error reason for a request label the table has no handler for."""


class _Deferred:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED: Final = _Deferred()
"""Returned by a handler that answered the caller itself (or saved it for later)."""

Handler = Callable[[Any], Awaitable[Any]]
"""An async function from a request body to the ``ok`` reply body."""

Table = Mapping[str, Handler]
"""A server: its handlers by request label."""

ErrorMap = Sequence[tuple[type[BaseException], str]]
"""Exception types a server answers as typed errors, and the reason for each (the
first matching entry wins).  :class:`ServerError` always carries its own reason."""


class Request(Protocol):
    """What the loop needs of a received message."""

    @property
    def label(self) -> str: ...

    @property
    def body(self) -> Any: ...


class ServerPort(Protocol):
    """The server's side of a channel: a ``Process`` handle is one."""

    async def recv(self, slot: int | str) -> Request: ...

    def reply(self, label: str = "ok", body: Any = None) -> bool: ...

    def reply_error(self, reason: str, detail: str = "") -> bool: ...

    # optional: ``slot(name) -> int``, the slot a name stands for; :func:`serve` then
    # resolves its slot name once instead of at every receive.  Optional too: a plain
    # ``reply_recv(slot, label, body)`` that replies when called (raising a refusal
    # there) and returns the receive to await -- seL4's ReplyRecv, one trap per step.
    # And ``offer(labels, answer, on_refused)``, whose result ``recv`` and ``reply_recv``
    # take as ``offer=``: calls answered in place while the loop waits (Process.offer)


# -- sans-IO ---------------------------------------------------------------------------------


def clip_detail(detail: str) -> str:
    """``detail`` cut to :data:`MAX_DETAIL` characters (marked with an ellipsis)."""
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "\u2026"


def error_reply(exc: BaseException, errors: ErrorMap = ()) -> tuple[str, str] | None:
    """The typed error ``(reason, detail)`` that answers ``exc``, or None if the server
    does not answer this exception (it is a bug of the server, which then ends)."""
    if isinstance(exc, ServerError):
        return exc.reason, clip_detail(exc.detail)
    for kind, reason in errors:
        if isinstance(exc, kind):
            return reason, clip_detail(str(exc))
    return None


def around(table: Table, wrapper: Callable[[str, Handler, Any], Awaitable[Any]]) -> Table:
    """A new table whose every handler runs as ``wrapper(label, handler, body)``: how a
    subclass adds delays, recording or attacks to all requests of a server at once."""

    def wrap(label: str, handler: Handler) -> Handler:
        async def wrapped(body: Any) -> Any:
            return await wrapper(label, handler, body)

        return wrapped

    return {label: wrap(label, handler) for label, handler in table.items()}


def immediate(answer: Callable[[Any], Any]) -> Handler:
    """A handler for ``answer``, a plain function that answers at once (nothing to wait
    for: the sealer's, a memory disk's).  It is an async handler like any other --
    awaited, wrapped by :func:`around`, called by tests -- but :func:`serve` calls
    ``answer`` itself, with no coroutine per request (each costs a few microseconds),
    and offers it with its receives: a call that finds the loop waiting is answered at
    the caller's trap, with no task switch (:mod:`capkern._inplace`).  So ``answer``
    answers by returning (or raising): it must not reply, receive or wait itself."""

    async def handler(body: Any) -> Any:
        return answer(body)

    handler.immediate = answer  # type: ignore[attr-defined]
    handler.__name__ = getattr(answer, "__name__", handler.__name__)
    return handler


# -- the loop -------------------------------------------------------------------------------


async def serve_one(port: ServerPort, table: Table, label: str, body: Any, *,
                    errors: ErrorMap = (),
                    on_refused: Callable[[CapkernError], None] | None = None) -> None:
    """Answer one request: run its handler and reply, or reply the typed error."""
    handler = table.get(label)
    if handler is None:
        _send(port, on_refused, "error",
              (UNSUPPORTED, clip_detail(f"no handler for label {label!r}")))
        return
    try:
        result = await handler(body)
    except Exception as exc:
        answer = error_reply(exc, errors)
        if answer is None:
            raise
        _send(port, on_refused, "error", answer)
        return
    if result is not DEFERRED:
        _send(port, on_refused, "ok", result)


def _send(port: ServerPort, on_refused: Callable[[CapkernError], None] | None,
          label: str, body: Any) -> None:
    try:
        if label == "error":
            port.reply_error(*body)
        else:
            port.reply(label, body)
    except CapkernError as exc:
        # the answer could not cross (too big, out of contract, no caller left): the
        # kernel has failed the caller with a typed error; this server keeps serving
        if on_refused is not None:
            on_refused(exc)


async def serve(port: ServerPort, table: Table, *, slot: int | str = "service",
                errors: ErrorMap = (),
                on_refused: Callable[[CapkernError], None] | None = None) -> NoReturn:
    """Serve ``table`` on ``slot`` until cancelled (or until a handler raises an
    exception outside ``errors``, which ends the server)."""
    # a slot name is resolved once (a port that can, such as a Process handle); the
    # capability in the slot is still looked up at every receive, so revoking it stops
    # the loop at its next receive
    resolve = getattr(port, "slot", None)
    if isinstance(slot, str) and callable(resolve):
        slot = resolve(slot)
    # serve_one, inlined: this loop runs once per message of every system server
    get = table.get
    now = {label: answer for label, handler in table.items()
           if (answer := getattr(handler, "immediate", None)) is not None}
    recv, reply_recv = _steps(port, now, errors, on_refused)
    msg = await recv(slot)
    while True:
        label = msg.label
        handler = get(label)
        if handler is None:
            _send(port, on_refused, "error",
                  (UNSUPPORTED, clip_detail(f"no handler for label {label!r}")))
            msg = await recv(slot)
            continue
        answer = now.get(label)
        try:  # an immediate handler is called as it is: no coroutine per request
            result = answer(msg.body) if answer is not None else await handler(msg.body)
        except Exception as exc:
            answer = error_reply(exc, errors)
            if answer is None:
                raise
            _send(port, on_refused, "error", answer)
            msg = await recv(slot)
            continue
        if result is DEFERRED:
            msg = await recv(slot)
            continue
        try:  # the answer and the next receive in one trap (seL4's ReplyRecv)
            step = reply_recv(slot, "ok", result)
        except CapkernError as exc:  # as in _send: the server keeps serving
            if on_refused is not None:
                on_refused(exc)
            step = recv(slot)
        msg = await step


def _steps(port: ServerPort, now: dict[str, Callable[[Any], Any]], errors: ErrorMap,
           on_refused: Callable[[CapkernError], None] | None
           ) -> tuple[Callable[[Any], Awaitable[Request]],
                      Callable[[Any, str, Any], Awaitable[Request]]]:
    """The loop's receive and ReplyRecv.  A port that can (a ``Process`` handle's
    ``offer``) offers the immediate handlers with every receive: a call for one of them
    that arrives while the loop waits is answered in place, at the caller's trap
    (:mod:`capkern._inplace`), as this loop would answer it."""
    make_offer = getattr(port, "offer", None)
    if not now or not callable(make_offer):
        return port.recv, _reply_recv(port)
    offer = make_offer(frozenset(now), _answerer(now, errors), on_refused)
    recv, reply_recv = port.recv, port.reply_recv  # type: ignore[attr-defined]

    def offering_recv(slot: Any) -> Awaitable[Request]:
        return recv(slot, offer=offer)  # type: ignore[call-arg]

    def offering_reply_recv(slot: Any, label: str, body: Any) -> Awaitable[Request]:
        return reply_recv(slot, label, body, offer=offer)  # type: ignore[no-any-return]

    return offering_recv, offering_reply_recv


def _answerer(now: dict[str, Callable[[Any], Any]], errors: ErrorMap
              ) -> Callable[[str, Any], tuple[str, Any]]:
    """The loop's answer to an immediate request, as a function (``Process.offer``'s
    ``answer``): the ``ok`` reply, or the typed error reply the loop would send; any
    other exception is the server's bug, as in the loop.  A ``RecursionError`` is
    never mapped: in place it is the caller's stack that ran out, and the kernel hands
    the call to the loop, which then answers it on its own stack."""

    def answer(label: str, body: Any) -> tuple[str, Any]:
        try:
            result = now[label](body)
        except RecursionError:  # the caller's stack, not the handler: handed over
            raise
        except Exception as exc:
            error = error_reply(exc, errors)
            if error is None:
                raise
            return "error", {"reason": error[0], "detail": error[1]}
        if result is DEFERRED:
            raise TypeError(f"immediate handler for {label!r} returned DEFERRED: an "
                            "immediate handler answers by returning its reply")
        return "ok", result

    return answer


def _reply_recv(port: ServerPort) -> Callable[[Any, str, Any], Awaitable[Request]]:
    """The port's ReplyRecv if it has one that replies when called (a refused answer
    raising there, not at the await: a ``Process`` handle's); else a reply, then a
    receive, in that order and with the same errors."""
    combined = getattr(port, "reply_recv", None)
    if combined is not None and not inspect.iscoroutinefunction(combined):
        return combined  # type: ignore[no-any-return]

    def reply_then_recv(slot: Any, label: str, body: Any) -> Awaitable[Request]:
        port.reply(label, body)
        return port.recv(slot)

    return reply_then_recv
