"""Messages: a message in flight inside the kernel, and as its receiver sees it.

A body crosses as bytes (:mod:`._wire`) and is decoded from them at the sender's trap --
kernel code -- for the receiver alone, so the receiver's objects are its own; the
message object itself is that receiver's view when no capability has to be moved into
the receiver's CSpace (:func:`capkern._ipc.deliver`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import TYPE_CHECKING, Any

import outcome

from . import _wire as wire
from .errors import ServerError

if TYPE_CHECKING:
    from ._cspace import Cap

__all__ = ["UNDECODED", "Delivered", "Message", "Received"]


class Received:
    """A message as its receiver sees it: freshly decoded, in the receiver's terms.

    ``caps`` are slot indices in the *receiver's* CSpace (0 where a capability could
    not be transferred).  ``badge`` is the badge of the sender's capability: it is how a
    server tells its clients apart.
    """

    # ``body`` is a plain slot, read with no call: every message's body is read once, and
    # a class with a ``__getattr__`` or a ``body`` property would slow every attribute
    # read of every message (a lazily decoded body is :class:`_LazyReceived`'s)
    __slots__ = ("_raw", "badge", "body", "caps", "label")

    def __init__(self, label: str, raw: bytes, value: Any, badge: int, caps: tuple[int, ...]):
        self.label = label
        self._raw = raw
        self.body = value
        self.badge = badge
        self.caps = caps

    @classmethod
    def lazy(cls, label: str, raw: bytes, badge: int, caps: tuple[int, ...]) -> Received:
        """A message whose body is decoded on first use (bytes from a trusted relay)."""
        return _LazyReceived(label, raw, badge, caps)

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


UNDECODED: Any = object()

#: the ``body`` slot itself, for :class:`_LazyReceived` to fill in behind its property
_BODY_SLOT: Any = Received.__dict__["body"]


class _LazyReceived(Received):
    """A received message whose body is decoded from its bytes on first use."""

    __slots__ = ()

    def __init__(self, label: str, raw: bytes, badge: int, caps: tuple[int, ...]):
        self.label = label
        self._raw = raw
        self.badge = badge
        self.caps = caps

    @property
    def body(self) -> Any:
        try:
            return _BODY_SLOT.__get__(self)
        except AttributeError:  # not decoded yet
            value = wire.decode(self._raw)
            _BODY_SLOT.__set__(self, value)
            return value


class Message(Received):
    """A message in flight inside the kernel.

    It is already the receiver's :class:`Received` (no capabilities in the receiver's
    terms yet: ``caps`` is empty), so a message that carries no capabilities and is not
    traced is delivered as itself, with no copy.  That shares nothing with the sender:
    the kernel made this object at the sender's trap, the sender's program never sees
    it, and its body is decoded from the bytes at that trap.
    """

    __slots__ = ("cap_src", "flow")

    def __init__(self, label: str, raw: bytes, value: Any, badge: int, caps: Sequence[Cap]):
        self.label = label
        self._raw = raw
        # decoded now if no check decoded it (or a program's schema node saw the value):
        # at the sender's trap, from the bytes, for the receiver alone
        self.body = wire.decode(raw) if value is UNDECODED else value
        self.badge = badge
        self.caps = ()
        self.cap_src = caps  # the sender's capabilities to transfer
        self.flow = 0  # the IPC trace's flow id, when the send was traced


#: the capabilities of a message that carries none: shared, never a new list per message
_NO_CAPS: tuple[Cap, ...] = ()


class Delivered(outcome.Outcome[Any]):
    """What a blocked task is woken with when IPC hands it a value (a message, a reply,
    a notification word): an :class:`outcome.Outcome` like ``outcome.Value``, unwrapped
    once, but built with a plain ``__init__`` -- ``outcome.Value`` is a frozen attrs class,
    whose construction and unwrap cost several calls, and IPC wakes a task several times
    per fault."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value
        self._unwrapped = False

    def __repr__(self) -> str:
        return f"Delivered({self.value!r})"

    def unwrap(self) -> Any:
        if self._unwrapped:
            raise outcome.AlreadyUsedError
        self._unwrapped = True
        return self.value

    def send(self, gen: Generator[Any, Any, Any]) -> Any:
        return gen.send(self.unwrap())

    async def asend(self, agen: AsyncGenerator[Any, Any]) -> Any:
        return await agen.asend(self.unwrap())
