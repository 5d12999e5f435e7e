"""What the frames between a proxy and its child carry (sans-IO, both sides).

Child -> proxy::

    ["sys", id, op, args, kwargs]   a syscall; answered by one "res" frame
    ["post", op, args]              a reply-family syscall, answered by nothing
    ["cancel", id]                  the child's task waiting on syscall ``id`` was cancelled
                                    (answered by its "res": the result if it completed,
                                    else the error named ``CANCELLED``)
    ["note", report]                attacker evidence (counters only), for the test's eyes
    ["exit", code, error]           the program ended (error: a summary, or None)

Proxy -> child::

    ["hello", target, mode, factory_args, boot_args, name, pid, limits]
    ["res", id, ok, value]          ok=1: value; ok=0: [error type, message, reason, detail]

A received message is ``["msg", label, raw body, badge, caps, has_reply]``: the body's
bytes cross exactly as the kernel checked them.  Errors cross as the *name* of a
:mod:`capkern.errors` type; anything else becomes a plain :class:`CapkernError`.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..errors import CapkernError, MalformedMessage, PageInError, ServerError

#: the error name of a "res" answering a cancelled syscall
CANCELLED = "-cancelled"

__all__ = ["ASYNC_OPS", "CANCELLED", "POST_OPS", "SYNC_OPS", "decode_error", "encode_error"]

#: syscalls that block in the kernel: the proxy runs each in a task of its own
ASYNC_OPS = frozenset({"recv", "call", "call_raw", "send", "send_raw", "wait", "revoke"})
#: syscalls that never block: answered inline
SYNC_OPS = frozenset({"slot", "name_slot", "caps", "new_endpoint", "new_notification", "copy",
                      "mint", "move", "delete", "nbsend", "save_caller", "reply_to",
                      "signal", "poll"})
#: replies: the child does not wait for them (like seL4's non-blocking reply)
POST_OPS = frozenset({"reply", "reply_raw"})


def encode_error(exc: BaseException) -> list[Any]:
    reason = getattr(exc, "reason", "")
    detail = getattr(exc, "detail", "")
    return [type(exc).__name__, str(exc)[:1000], reason if isinstance(reason, str) else "",
            detail if isinstance(detail, str) else ""]


def decode_error(value: Any) -> CapkernError:
    """The typed error a "res" frame carries (never a type outside capkern.errors)."""
    if not (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, str) for v in value)):
        return MalformedMessage("bad error frame")
    name, message, reason, detail = value
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, CapkernError)):
        return CapkernError(message)
    if issubclass(cls, ServerError):
        return cls(reason, detail)
    if issubclass(cls, PageInError):
        return cls(reason, detail)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc
