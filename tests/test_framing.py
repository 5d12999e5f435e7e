"""The sans-IO framer between the kernel's proxy and a child process, its error codec and
the lost-page ledger: plain functions and classes, tested without an event loop."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern import errors
from capkern.errors import (
    CapkernError,
    InvalidSlot,
    MalformedMessage,
    MessageTooLarge,
    PageInError,
    PageLost,
    ServerError,
)
from capkern.isolation._framing import FrameDecoder, FrameLimits, encode_frame
from capkern.isolation._ledger import PageLedger
from capkern.isolation._messages import decode_error, encode_error


def test_frames_round_trip_across_arbitrary_chunking() -> None:
    frames = [["sys", 1, "recv", ["service"], {}], ["res", 1, 1, ["msg", "x", b"\x90", 0, [],
                                                                  True]], ["exit", 0, None]]
    data = b"".join(encode_frame(f) for f in frames)
    for step in (1, 2, 3, 7, len(data)):
        dec = FrameDecoder()
        out: list[list[object]] = []
        for i in range(0, len(data), step):
            dec.feed(data[i : i + step])
            out.extend(dec.frames())
        assert out == frames
        assert dec.buffered == 0 and dec.refused == 0


@given(st.lists(st.tuples(st.sampled_from(["sys", "res", "post"]), st.integers(0, 2**32),
                          st.binary(max_size=200)), max_size=20),
       st.integers(1, 64))
def test_any_frames_survive_any_split(frames: list[tuple[str, int, bytes]], step: int) -> None:
    fields = [list(f) for f in frames]
    data = b"".join(encode_frame(f) for f in fields)
    dec = FrameDecoder()
    out: list[list[object]] = []
    for i in range(0, len(data), step):
        dec.feed(data[i : i + step])
        out.extend(dec.frames())
    assert out == fields


def test_a_length_over_the_limit_is_refused_before_buffering_and_sticks() -> None:
    dec = FrameDecoder(FrameLimits(max_frame=1024))
    dec.feed(struct.pack(">I", 1025))
    with pytest.raises(MessageTooLarge):
        dec.next_frame()
    assert dec.broken and dec.refused == 1
    dec.feed(encode_frame(["exit", 0, None]) * 100)  # nothing more is believed
    assert dec.next_frame() is None and dec.buffered == 0


def test_zero_length_frame_breaks_the_stream() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(MessageTooLarge):
        dec.next_frame()
    assert dec.broken


@pytest.mark.parametrize("payload", [
    b"\xc1",                                     # never-used msgpack byte
    msgpack.packb(5),                            # not a list
    msgpack.packb([]),                           # no kind
    msgpack.packb([7, 1]),                       # kind not a str
    msgpack.packb(["sys"] + [0] * 20),           # too many fields
    msgpack.packb(["exit"]) + b"\x00",           # trailing bytes
    b"\xd4\x01\x00",                             # extension type
], ids=["bad-byte", "int", "empty", "int-kind", "too-long", "trailing", "ext"])
def test_a_bad_body_is_refused_counted_and_skipped(payload: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", len(payload)) + payload + encode_frame(["exit", 0, None]))
    with pytest.raises(MalformedMessage):
        dec.next_frame()
    assert dec.refused == 1 and dec.broken is None
    assert dec.next_frame() == ["exit", 0, None]


def test_encode_refuses_oversized_and_kindless_frames() -> None:
    with pytest.raises(MessageTooLarge):
        encode_frame(["res", 1, 1, b"x" * 2048], FrameLimits(max_frame=1024))
    with pytest.raises(MalformedMessage):
        encode_frame([1, 2])
    with pytest.raises(MalformedMessage):
        encode_frame([])


def test_the_kernels_largest_body_fits_a_default_frame() -> None:
    body = b"x" * ((1 << 20) - 16)
    frame = encode_frame(["res", 2**40, 1, ["msg", "ok" * 32, body, 2**63 - 1, [1, 2, 3, 4],
                                             True]])
    dec = FrameDecoder()
    dec.feed(frame)
    assert dec.next_frame() is not None


# -- errors cross as names --------------------------------------------------------------------


@pytest.mark.parametrize("exc", [InvalidSlot("slot 9 is not a slot"), ServerError("io", "disk"),
                                 PageLost("lost", "gone"), PageInError("not_found", "?")])
def test_typed_errors_cross_by_name(exc: CapkernError) -> None:
    back = decode_error(encode_error(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    if isinstance(exc, ServerError | PageInError):
        assert getattr(back, "reason", None) == exc.reason


@pytest.mark.parametrize("value", [["KeyboardInterrupt", "x", "", ""], ["object", "x", "", ""],
                                   ["__builtins__", "", "", ""], [1, 2, 3, 4], "junk", None])
def test_an_error_frame_cannot_name_anything_outside_capkern_errors(value: object) -> None:
    back = decode_error(value)
    assert isinstance(back, CapkernError)
    assert type(back).__module__ == errors.__name__


# -- the lost-page ledger ----------------------------------------------------------------------


def test_pages_stored_before_a_crash_are_lost_and_only_those() -> None:
    ledger = PageLedger()
    ledger.replied("store", "ok", {"stored": [1, 2, 3]})
    ledger.replied("store", "error", {"stored": [9]})  # a refused store stored nothing
    assert ledger.request("fetch", {"handle": 1}) is None
    assert ledger.crashed() == 3
    assert ledger.request("fetch", {"handle": 1}) is not None
    assert ledger.request("fetch", {"handle": 9}) is None
    ledger.replied("store", "ok", {"stored": [2]})  # stored again by the new incarnation
    assert ledger.request("fetch", {"handle": 2}) is None
    ledger.request("discard", {"handles": [3]})
    assert ledger.request("fetch", {"handle": 3}) is None
    assert ledger.lost == {1}


def test_ledger_ignores_bodies_of_the_wrong_shape() -> None:
    ledger = PageLedger()
    ledger.replied("store", "ok", None)
    ledger.replied("store", "ok", {"stored": ["x", None, 4]})
    assert ledger.request("fetch", "junk") is None
    assert ledger.request("discard", {"handles": None}) is None
    assert ledger.stored == {4}
