"""Message bodies on the wire: encoding limits and untrusted decoding (capkern._wire)."""

from __future__ import annotations

import datetime
import math
from collections import OrderedDict
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capkern._wire import Limits, decode, decode_untrusted, encode
from capkern.errors import (
    MalformedMessage,
    MessageTooLarge,
    NestingTooDeep,
    UnencodableBody,
)

LIM = Limits()
REFUSALS = (MalformedMessage, NestingTooDeep, MessageTooLarge)


def roundtrip(value: Any, limits: Limits = LIM) -> Any:
    raw = encode(value, limits)
    assert isinstance(raw, bytes)
    out = decode(raw)
    assert decode_untrusted(raw, limits) == out
    return out


def nest_list(levels: int) -> Any:
    x: Any = []
    for _ in range(levels - 1):
        x = [x]
    return x


def nest_dict(levels: int) -> Any:
    x: Any = {}
    for _ in range(levels - 1):
        x = {"k": x}
    return x


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        math.inf,
        "",
        "héllo ✓",
        b"",
        b"\x00\xff" * 100,
        [],
        {},
        [1, "a", b"b", None, [2.5, {"x": [True]}]],
        {"a": 1, 2: "b", -3: [None]},
    ],
)
def test_roundtrip_allowed(value: Any) -> None:
    out = roundtrip(value)
    assert out == value
    assert type(out) is type(value)


def test_nan_roundtrip() -> None:
    raw = encode(math.nan, LIM)
    assert math.isnan(decode(raw)) and math.isnan(decode_untrusted(raw, LIM))


def test_tuples_arrive_as_lists() -> None:
    assert roundtrip((1, (2, 3), {"t": ()})) == [1, [2, 3], {"t": []}]


def test_bytearray_and_memoryview_arrive_as_bytes() -> None:
    assert roundtrip([bytearray(b"ab"), memoryview(b"cd")]) == [b"ab", b"cd"]


def test_decoded_objects_are_fresh() -> None:
    body = {"l": [1, 2]}
    out = roundtrip(body)
    assert out == body and out is not body and out["l"] is not body["l"]


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(st.text(max_size=5) | st.integers(-(2**63), 2**63 - 1), kids, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(json_like)
def test_roundtrip_property(value: Any) -> None:
    assert roundtrip(value) == value


# -- unencodable ---------------------------------------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize(
    "value",
    [
        Thing(),
        object(),
        {1, 2},
        frozenset(),
        [1, {2}],
        {"a": object()},
        {(1, 2): 1},
        {1.5: 1},
        {None: 1},
        {b"k": 1},
        {True: 1},
        {"ok": {frozenset(): 1}},
        2**64,
        -(2**63) - 1,
        [1, 2**70],
        {"deep": [[-(2**100)]]},
        OrderedDict(a=1),
        1j,
        datetime.datetime(2020, 1, 1),
        print,
        Exception("x"),
    ],
)
def test_unencodable(value: Any) -> None:
    with pytest.raises(UnencodableBody):
        encode(value, LIM)


def test_failed_encode_leaves_no_partial_buffer() -> None:
    with pytest.raises(UnencodableBody):
        encode([1, 2, 3, 2**70], LIM)
    assert encode([7], LIM) == msgpack.packb([7])
    assert decode(encode("x", LIM)) == "x"


# -- nesting and size ---------------------------------------------------------------------------


@pytest.mark.parametrize("nest", [nest_list, nest_dict])
@pytest.mark.parametrize("limit", [1, 2, 5, 32])
def test_nesting_limit(nest: Any, limit: int) -> None:
    lim = Limits(max_depth=limit)
    ok = nest(limit)
    assert decode(encode(ok, lim)) == ok
    assert decode_untrusted(msgpack.packb(ok), lim) == ok
    bad = nest(limit + 1)
    with pytest.raises(NestingTooDeep):
        encode(bad, lim)
    with pytest.raises(NestingTooDeep):
        decode_untrusted(msgpack.packb(bad), lim)


def test_scalars_do_not_count_as_nesting() -> None:
    lim = Limits(max_depth=2)
    assert roundtrip([[1, "a", b"b", None, 2.0]], lim) == [[1, "a", b"b", None, 2.0]]
    with pytest.raises(NestingTooDeep):
        encode([[[]]], lim)
    with pytest.raises(NestingTooDeep):
        encode({"a": {"b": (1,)}}, lim)


def test_default_depth_limit() -> None:
    assert roundtrip(nest_list(LIM.max_depth)) == nest_list(LIM.max_depth)
    with pytest.raises(NestingTooDeep):
        encode(nest_list(LIM.max_depth + 1), LIM)


def test_message_too_large() -> None:
    lim = Limits(max_body_bytes=100)
    ok = b"x" * 98  # bin8: 2 header bytes
    assert len(encode(ok, lim)) == 100
    with pytest.raises(MessageTooLarge):
        encode(b"x" * 99, lim)
    with pytest.raises(MessageTooLarge):
        encode(["a"] * 200, lim)
    with pytest.raises(MessageTooLarge):
        decode_untrusted(msgpack.packb(b"x" * 99), lim)
    assert decode_untrusted(msgpack.packb(ok), lim) == ok


def test_oversized_untrusted_input_refused_before_parsing() -> None:
    lim = Limits(max_body_bytes=1000)
    with pytest.raises(MessageTooLarge):
        decode_untrusted(b"\xc1" * 1001, lim)  # invalid, but too large first
    with pytest.raises(MessageTooLarge):
        decode_untrusted(b"\x00" * (LIM.max_body_bytes + 1), LIM)


# -- untrusted decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",  # never-used type byte
        b"\x92\x01",  # array of 2, only one item
        b"\xa5abc",  # truncated str
        b"\xc4\x10abc",  # truncated bin
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4G items
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4G pairs
        b"\xdb\xff\xff\xff\xff",  # str32 claiming 4G bytes
        b"\x01\x02",  # trailing bytes
        msgpack.packb([1, 2]) + b"\xc0",
        b"\xd4\x05\x01",  # fixext1
        b"\xc7\x03\x10abc",  # ext8
        msgpack.packb(msgpack.ExtType(42, b"payload")),
        msgpack.packb(msgpack.Timestamp(1, 2)),
        msgpack.packb(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), datetime=True),
        b"\xa2\xff\xfe",  # invalid utf-8
        b"\xa3\xed\xa0\x80",  # utf-8 surrogate
        b"\x91" * 10_000 + b"\xc0",
        b"\x81" * 10_000 + b"\xc0",
        msgpack.packb({b"k": 1}),  # bytes key
        b"\x81\xc0\x01",  # nil key
        b"\x81\xc3\x01",  # bool key
        b"\x81\xcb" + b"\x00" * 8 + b"\x01",  # float key
        b"\x81\x91\x01\x02",  # array key
        b"\x81\x80\x02",  # map key
    ],
)
def test_untrusted_refusals(raw: bytes) -> None:
    with pytest.raises(REFUSALS):
        decode_untrusted(raw, LIM)


@pytest.mark.parametrize("raw", [None, "str", 5, [b"\x01"]])
def test_untrusted_non_bytes_refused(raw: Any) -> None:
    with pytest.raises(MalformedMessage):
        decode_untrusted(raw, LIM)


def test_untrusted_accepts_bytearray_and_memoryview() -> None:
    raw = msgpack.packb({"a": [1, b"x"]})
    assert decode_untrusted(bytearray(raw), LIM) == {"a": [1, b"x"]}  # type: ignore[arg-type]
    assert decode_untrusted(memoryview(raw), LIM) == {"a": [1, b"x"]}  # type: ignore[arg-type]


def test_untrusted_accepts_plain_valid_body() -> None:
    raw = msgpack.packb({"op": "read", "page": 3, "data": b"\x00" * 16, 7: [None, 1.5]})
    assert decode_untrusted(raw, LIM) == {
        "op": "read",
        "page": 3,
        "data": b"\x00" * 16,
        7: [None, 1.5],
    }


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_refuse(raw: bytes) -> None:
    try:
        decode_untrusted(raw, LIM)
    except REFUSALS:
        pass


@settings(max_examples=200, deadline=None, derandomize=True)
@given(json_like, st.data())
def test_mutated_valid_bodies_decode_or_refuse(value: Any, data: st.DataObject) -> None:
    raw = bytearray(msgpack.packb(value))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    raw += data.draw(st.binary(max_size=4))
    try:
        out = decode_untrusted(bytes(raw), Limits(max_depth=4))
    except REFUSALS:
        return
    # whatever is accepted re-encodes under the same limits, to the same bytes again
    again = encode(out, Limits(max_depth=4))
    assert encode(decode_untrusted(again, Limits(max_depth=4)), Limits(max_depth=4)) == again


