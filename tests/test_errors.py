"""The error families a caller catches: every refusal raised by the real boundary code
(wire limits, untrusted decoding, contracts, CSpace lookups and derivations) is caught
by its documented family and by :class:`CapkernError`, and says what went wrong.

Driven through the code that raises, not by restating the class definitions: a
refusal raised with the wrong type (a bare ValueError, a KeyError) fails here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import capkern
from capkern import errors
from capkern._contract import Contract, Int, Op, Struct
from capkern._cspace import CSpace, KObject, Rights
from capkern._wire import Limits, decode_untrusted, encode
from capkern.errors import CapabilityError, CapkernError, IPCError, MessageError

LIM = Limits(max_body_bytes=256, max_depth=4)
ADD = Contract("adder", {"add": Op(Struct({"a": Int(), "b": Int()}), Struct({"sum": Int()}))})


class Ep(KObject):
    kind = "Endpoint"


def _deep(levels: int) -> Any:
    body: Any = 0
    for _ in range(levels):
        body = [body]
    return body


def _rebadge() -> object:
    cs = CSpace("alice", 1, size=4)
    badged = cs.mint(cs.insert_original(Ep(), Rights.ALL, "ep"), Rights.parse("rw"), 7)
    return cs.mint(badged, Rights.parse("r"), 9)


def _overfill() -> object:
    cs = CSpace("alice", 1, size=2)
    return [cs.insert_original(Ep(), Rights.ALL, "") for _ in range(3)]


REFUSALS: dict[str, tuple[type[CapkernError], Callable[[], object]]] = {
    "unencodable body": (MessageError, lambda: encode({"k": object()}, LIM)),
    "body too large": (MessageError, lambda: encode(b"x" * 1000, LIM)),
    "body too deep": (MessageError, lambda: encode(_deep(10), LIM)),
    "garbage bytes": (MessageError, lambda: decode_untrusted(b"\xc1", LIM)),
    "truncated bytes": (MessageError, lambda: decode_untrusted(b"\x93\x01", LIM)),
    "not bytes": (MessageError, lambda: decode_untrusted("text", LIM)),  # type: ignore[arg-type]
    "unknown label": (MessageError, lambda: ADD.check_request("mul", {"a": 1, "b": 2})),
    "bad request body": (MessageError, lambda: ADD.check_request("add", {"a": "1", "b": 2})),
    "bad reply body": (MessageError, lambda: ADD.check_reply("add", "ok", {"sum": None})),
    "forged slot": (CapabilityError, lambda: CSpace("alice", 1, size=4).lookup(99)),
    "empty slot": (CapabilityError, lambda: CSpace("alice", 1, size=4).lookup(2)),
    "rebadge": (CapabilityError, _rebadge),
    "full cspace": (CapabilityError, _overfill),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=str)
def test_each_refusal_is_caught_by_its_family(case: str) -> None:
    family, refuse = REFUSALS[case]
    with pytest.raises(family) as info:
        refuse()
    exc = info.value
    assert isinstance(exc, CapkernError)
    assert str(exc), "a refusal says what went wrong"
    # the family is exactly one: message refusals are IPC errors, not capability errors
    others = {MessageError, CapabilityError} - {family}
    assert not isinstance(exc, tuple(others))
    if family is MessageError:
        assert isinstance(exc, IPCError)


def test_every_public_error_is_a_capkern_error_exported_by_capkern() -> None:
    assert errors.__all__
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert isinstance(cls, type) and issubclass(cls, CapkernError), name
        assert getattr(capkern, name) is cls, f"capkern.{name} is not exported"
