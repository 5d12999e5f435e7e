"""The sans-IO NBD client: handshake and transmission driven byte by byte, no event loop.

The server side is written out here from the public protocol description, so every
malformed, out-of-order or lying answer a server could give is tried against the client.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capkern.servers.blockdev import _nbd_proto as p
from capkern.servers.blockdev._backends import BackendIOError
from capkern.servers.blockdev._nbd_handshake import Handshake
from capkern.servers.blockdev._nbd_proto import (
    ExportInfo,
    NBDCommandError,
    NBDError,
    NBDOptionError,
    NBDProtocolError,
    runs,
)
from capkern.servers.blockdev._nbd_transmission import Completed, Transmission

SIZE = 1 << 20
FLAGS = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH | p.TFLAG_SEND_TRIM | p.TFLAG_SEND_WRITE_ZEROES


def greeting(flags: int = p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES) -> bytes:
    return struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, flags)


def opt_reply(option: int, rtype: int, payload: bytes = b"") -> bytes:
    return struct.pack(">QIII", p.OPT_REPLY_MAGIC, option, rtype, len(payload)) + payload


def info_export(size: int = SIZE, flags: int = FLAGS) -> bytes:
    return opt_reply(p.OPT_GO, p.REP_INFO, struct.pack(">HQH", p.INFO_EXPORT, size, flags))


def info_block(lo: int = 1, pref: int = 4096, hi: int = 1 << 20) -> bytes:
    return opt_reply(p.OPT_GO, p.REP_INFO, struct.pack(">HIII", p.INFO_BLOCK_SIZE, lo, pref, hi))


ACK_STRUCTURED = opt_reply(p.OPT_STRUCTURED_REPLY, p.REP_ACK)
ACK_GO = opt_reply(p.OPT_GO, p.REP_ACK)
HAPPY = greeting() + ACK_STRUCTURED + info_export() + info_block() + ACK_GO


def options_sent(out: bytes) -> list[tuple[int, bytes]]:
    """The (option, payload) pairs in the client's bytes after its 4-byte flags."""
    found, pos = [], 4
    while pos < len(out):
        magic, option, length = struct.unpack(">QII", out[pos:pos + 16])
        assert magic == p.IHAVEOPT
        found.append((option, out[pos + 16:pos + 16 + length]))
        pos += 16 + length
    return found


def negotiate(script: bytes, export: str = "", *, step: int | None = None,
              structured: bool = True) -> tuple[Handshake, bytes]:
    hs = Handshake(export, structured=structured)
    sent = b""
    chunks = [script] if step is None else [script[i:i + step]
                                            for i in range(0, len(script), step)]
    for chunk in chunks:
        hs.receive_data(chunk)
        sent += hs.data_to_send()
    return hs, sent


# -- handshake ---------------------------------------------------------------------------------


def test_go_with_structured_replies() -> None:
    hs, sent = negotiate(HAPPY, "disk0")
    assert hs.done and hs.info == ExportInfo(SIZE, FLAGS, True, 1, 4096, 1 << 20)
    assert struct.unpack(">I", sent[:4])[0] == p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES
    (o1, body1), (o2, body2) = options_sent(sent)
    assert (o1, body1) == (p.OPT_STRUCTURED_REPLY, b"")
    assert o2 == p.OPT_GO
    assert body2 == struct.pack(">I", 5) + b"disk0" + struct.pack(">HH", 1, p.INFO_BLOCK_SIZE)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 17])
def test_any_split_of_the_bytes_gives_the_same_result(step: int) -> None:
    hs, sent = negotiate(HAPPY, "x", step=step)
    whole, sent_whole = negotiate(HAPPY, "x")
    assert hs.info == whole.info and sent == sent_whole


def test_structured_refused_falls_back_to_simple_replies() -> None:
    script = (greeting() + opt_reply(p.OPT_STRUCTURED_REPLY, p.REP_ERR_UNSUP)
              + info_export() + ACK_GO)
    hs, _ = negotiate(script)
    assert hs.info is not None and not hs.info.structured


def test_structured_not_asked() -> None:
    hs, sent = negotiate(greeting() + info_export() + ACK_GO, structured=False)
    assert hs.info is not None and not hs.info.structured
    assert [o for o, _ in options_sent(sent)] == [p.OPT_GO]


@pytest.mark.parametrize("no_zeroes", [True, False])
def test_server_without_go_gets_export_name(no_zeroes: bool) -> None:
    flags = p.FLAG_FIXED_NEWSTYLE | (p.FLAG_NO_ZEROES if no_zeroes else 0)
    answer = struct.pack(">QH", 4096 * 10, FLAGS) + (b"" if no_zeroes else bytes(124))
    script = (greeting(flags) + opt_reply(p.OPT_STRUCTURED_REPLY, p.REP_ERR_UNSUP)
              + opt_reply(p.OPT_GO, p.REP_ERR_UNSUP))
    hs, sent = negotiate(script, "old")
    assert not hs.done
    hs.receive_data(answer[:5])
    assert not hs.done
    hs.receive_data(answer[5:])
    assert hs.info is not None and hs.info.size == 40960 and not hs.info.structured
    assert options_sent(sent + hs.data_to_send())[-1] == (p.OPT_EXPORT_NAME, b"old")
    assert struct.unpack(">I", sent[:4])[0] & p.FLAG_NO_ZEROES == (2 if no_zeroes else 0)


def test_unknown_export_is_refused_with_the_servers_message() -> None:
    script = greeting() + ACK_STRUCTURED + opt_reply(p.OPT_GO, p.REP_ERR_BIT | 6, b"no such")
    with pytest.raises(NBDOptionError, match=r"unknown export.*no such"):
        negotiate(script, "nope")


def test_info_before_ack_is_required() -> None:
    with pytest.raises(NBDProtocolError, match="size"):
        negotiate(greeting() + ACK_STRUCTURED + ACK_GO)


@pytest.mark.parametrize(
    ("script", "error", "match"),
    [
        (b"NOTMAGIC" + bytes(10), NBDProtocolError, "NBDMAGIC"),
        (struct.pack(">QQH", p.NBDMAGIC, p.OLDSTYLE_MAGIC, 0), NBDOptionError, "oldstyle"),
        (struct.pack(">QQH", p.NBDMAGIC, 12345, 1), NBDProtocolError, "magic"),
        (greeting(0), NBDOptionError, "fixed newstyle"),
        (greeting() + struct.pack(">QIII", 99, p.OPT_STRUCTURED_REPLY, p.REP_ACK, 0),
         NBDProtocolError, "magic"),
        (greeting() + opt_reply(p.OPT_GO, p.REP_ACK), NBDProtocolError, "expected"),
        (greeting() + struct.pack(">QIII", p.OPT_REPLY_MAGIC, p.OPT_STRUCTURED_REPLY, 1, 1 << 30),
         NBDProtocolError, "bytes"),
        (greeting() + opt_reply(p.OPT_STRUCTURED_REPLY, 77), NBDProtocolError, "unexpected"),
        (greeting() + ACK_STRUCTURED + opt_reply(p.OPT_GO, 77), NBDProtocolError, "unexpected"),
        (greeting() + ACK_STRUCTURED + opt_reply(p.OPT_GO, p.REP_INFO, b"\x00"),
         NBDProtocolError, "type"),
        (greeting() + ACK_STRUCTURED + opt_reply(p.OPT_GO, p.REP_INFO, b"\x00\x00" + bytes(9)),
         NBDProtocolError, "INFO_EXPORT"),
        (greeting() + ACK_STRUCTURED + info_block(4096, 512, 1 << 20), NBDProtocolError,
         "block sizes"),
        (greeting() + ACK_STRUCTURED + info_block(3, 4096, 1 << 20), NBDProtocolError,
         "block sizes"),
    ],
    ids=["not-nbd", "oldstyle", "bad-second-magic", "not-fixed", "bad-reply-magic",
         "wrong-option-echoed", "huge-option-reply", "bad-structured-answer", "bad-go-answer",
         "info-without-type", "short-info-export", "inconsistent-block-size",
         "block-size-not-power-of-two"],
)
def test_bad_servers_are_refused(script: bytes, error: type[NBDError], match: str) -> None:
    with pytest.raises(error, match=match):
        negotiate(script)


def test_closed_during_handshake() -> None:
    hs = Handshake()
    hs.receive_data(greeting()[:10])
    with pytest.raises(NBDProtocolError, match="closed"):
        hs.receive_data(b"")


def test_errors_are_backend_io_errors() -> None:
    """The block device maps them to its ``io`` reason; nothing new for the pager to learn."""
    assert issubclass(NBDError, BackendIOError)


def test_export_name_too_long() -> None:
    with pytest.raises(NBDOptionError):
        Handshake("x" * 4097)


# -- transmission ------------------------------------------------------------------------------


def tx(*, structured: bool = True, flags: int = FLAGS, size: int = SIZE) -> Transmission:
    return Transmission(ExportInfo(size, flags, structured, max_payload=1 << 16))


def requests(out: bytes) -> list[tuple[int, int, int, int, int, bytes]]:
    found, pos = [], 0
    while pos < len(out):
        magic, flags, cmd, handle, offset, length = p.REQUEST.unpack(out[pos:pos + 28])
        assert magic == p.REQUEST_MAGIC
        pos += 28
        payload = out[pos:pos + length] if cmd == p.CMD_WRITE else b""
        pos += len(payload)
        found.append((flags, cmd, handle, offset, length, payload))
    return found


def simple(handle: int, error: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">IIQ", p.SIMPLE_REPLY_MAGIC, error, handle) + data


def chunk(handle: int, rtype: int, payload: bytes = b"", done: bool = False) -> bytes:
    return struct.pack(">IHHQI", p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE if done else 0,
                       rtype, handle, len(payload)) + payload


def data_chunk(handle: int, offset: int, data: bytes, done: bool = False) -> bytes:
    return chunk(handle, p.REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset) + data, done)


def hole_chunk(handle: int, offset: int, size: int, done: bool = False) -> bytes:
    return chunk(handle, p.REPLY_TYPE_OFFSET_HOLE, struct.pack(">QI", offset, size), done)


def error_chunk(handle: int, err: int, msg: bytes = b"", done: bool = True) -> bytes:
    return chunk(handle, p.REPLY_TYPE_ERROR, struct.pack(">IH", err, len(msg)) + msg, done)


def events(t: Transmission) -> list[Completed]:
    out = []
    while (e := t.next_event()) is not None:
        out.append(e)
    return out


def test_requests_are_encoded_with_distinct_handles() -> None:
    t = tx()
    handles = [t.read(4096, 8192), t.write(0, b"ab" * 256), t.flush(), t.trim(512, 512),
               t.write_zeroes(1024, 512, may_trim=False)]
    assert len(set(handles)) == 5 and t.in_flight == 5
    sent = requests(t.data_to_send())
    assert [(c, o, n) for _, c, _, o, n, _ in sent] == [
        (p.CMD_READ, 4096, 8192), (p.CMD_WRITE, 0, 512), (p.CMD_FLUSH, 0, 0),
        (p.CMD_TRIM, 512, 512), (p.CMD_WRITE_ZEROES, 1024, 512)]
    assert [h for _, _, h, _, _, _ in sent] == handles
    assert sent[1][5] == b"ab" * 256 and sent[4][0] == p.CMD_FLAG_NO_HOLE


def test_simple_replies_in_any_order() -> None:
    t = tx(structured=False)
    a, b = t.read(0, 4), t.write(8, b"zz")
    t.data_to_send()
    reply = simple(b) + simple(a, data=b"wxyz")
    for i in range(len(reply)):  # byte by byte
        t.receive_data(reply[i:i + 1])
    got = events(t)
    assert [(e.handle, e.data, e.error) for e in got] == [(b, None, None), (a, b"wxyz", None)]
    assert t.in_flight == 0


def test_structured_read_from_chunks_and_holes_in_any_order() -> None:
    t = tx()
    h = t.read(1000, 30)
    t.receive_data(data_chunk(h, 1020, b"C" * 10) + hole_chunk(h, 1010, 10)
                   + data_chunk(h, 1000, b"A" * 10) + chunk(h, p.REPLY_TYPE_NONE, done=True))
    (e,) = events(t)
    assert e.data == b"A" * 10 + bytes(10) + b"C" * 10


def test_structured_command_error_keeps_the_connection_in_step() -> None:
    t = tx()
    h1, h2 = t.read(0, 8), t.flush()
    t.receive_data(error_chunk(h1, 5, b"disk on fire") + chunk(h2, p.REPLY_TYPE_NONE, done=True))
    e1, e2 = events(t)
    assert isinstance(e1.error, NBDCommandError) and e1.error.errno == 5
    assert "EIO" in str(e1.error) and "disk on fire" in str(e1.error)
    assert e2.error is None and t.in_flight == 0


def test_simple_error_reply_has_no_payload() -> None:
    t = tx(structured=False)
    h1, h2 = t.read(0, 8), t.read(8, 2)
    t.receive_data(simple(h1, error=28) + simple(h2, data=b"ok"))
    e1, e2 = events(t)
    assert e1.error is not None and e1.error.errno == 28 and e2.data == b"ok"


def test_error_offset_chunk() -> None:
    t = tx()
    h = t.read(0, 16)
    payload = struct.pack(">IH", 5, 3) + b"bad" + struct.pack(">Q", 8)
    t.receive_data(chunk(h, p.REPLY_TYPE_ERROR_OFFSET, payload, done=True))
    (e,) = events(t)
    assert e.error is not None and e.error.errno == 5


def _two_reads() -> tuple[Transmission, int]:
    t = tx()
    return t, t.read(100, 20)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda h: simple(h + 99), "unknown handle"),
        (lambda h: b"\xde\xad\xbe\xef" + bytes(12), "magic"),
        (lambda h: data_chunk(h, 90, b"x" * 20, done=True), "outside"),
        (lambda h: data_chunk(h, 110, b"x" * 20, done=True), "outside"),
        (lambda h: data_chunk(h, 100, b"x" * 10) + data_chunk(h, 105, b"y" * 10, True),
         "overlaps"),
        (lambda h: data_chunk(h, 100, b"x" * 10, done=True), "incompletely"),
        (lambda h: chunk(h, p.REPLY_TYPE_NONE, b"x", done=True), "NONE"),
        (lambda h: chunk(h, p.REPLY_TYPE_NONE), "NONE"),
        (lambda h: chunk(h, 7, b"", done=True), "unknown reply chunk"),
        (lambda h: chunk(h, p.REPLY_TYPE_OFFSET_DATA, b"1234", done=True), "without data"),
        (lambda h: chunk(h, p.REPLY_TYPE_OFFSET_HOLE, b"123", done=True), "OFFSET_HOLE"),
        (lambda h: hole_chunk(h, 100, 0, done=True), "empty"),
        (lambda h: chunk(h, p.REPLY_TYPE_ERROR, b"\x00", done=True), "too short"),
        (lambda h: chunk(h, p.REPLY_TYPE_ERROR, struct.pack(">IH", 5, 9) + b"ab", True),
         "length"),
        (lambda h: error_chunk(h, 0), "error 0"),
        (lambda h: simple(h, data=b"x" * 20), "simple reply with data"),
        (lambda h: struct.pack(">IHHQI", p.STRUCTURED_REPLY_MAGIC, 1, 1, h, 1 << 30),
         "chunk for"),
    ],
    ids=["unknown-handle", "bad-magic", "chunk-before-range", "chunk-after-range",
         "overlapping-chunks", "short-coverage", "none-with-payload", "none-without-done",
         "unknown-chunk-type", "data-without-data", "malformed-hole", "empty-hole",
         "short-error", "error-length-mismatch", "error-zero", "simple-data-when-structured",
         "oversized-chunk"],
)
def test_lying_replies_are_protocol_errors(reply: object, match: str) -> None:
    t, h = _two_reads()
    with pytest.raises(NBDProtocolError, match=match):
        t.receive_data(reply(h))  # type: ignore[operator]


def test_data_chunk_answering_a_write() -> None:
    t = tx()
    h = t.write(0, b"abcd")
    with pytest.raises(NBDProtocolError, match="non-read"):
        t.receive_data(data_chunk(h, 0, b"abcd", done=True))


def test_structured_reply_never_negotiated() -> None:
    t = tx(structured=False)
    h = t.flush()
    with pytest.raises(NBDProtocolError, match="never negotiated"):
        t.receive_data(chunk(h, p.REPLY_TYPE_NONE, done=True))


def test_close_with_commands_in_flight() -> None:
    t = tx()
    t.read(0, 8)
    with pytest.raises(NBDProtocolError, match="unanswered"):
        t.receive_data(b"")
    idle = tx()
    idle.receive_data(b"")  # nothing pending: an orderly end


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (SIZE - 1, 2), (SIZE, 1), (0, -1)])
def test_requests_outside_the_export_are_refused_before_sending(offset: int,
                                                                length: int) -> None:
    t = tx()
    with pytest.raises(NBDError, match="outside"):
        t.read(offset, length)
    assert t.data_to_send() == b"" and t.in_flight == 0


def test_payload_limit_and_read_only_and_disconnect() -> None:
    t = tx()
    with pytest.raises(NBDError, match="exceed"):
        t.read(0, (1 << 16) + 1)
    ro = tx(flags=FLAGS | p.TFLAG_READ_ONLY)
    with pytest.raises(NBDError, match="read-only"):
        ro.write(0, b"x")
    t.disconnect()
    t.disconnect()
    assert [c for _, c, *_ in requests(t.data_to_send())] == [p.CMD_DISC]
    with pytest.raises(NBDProtocolError, match="disconnected"):
        t.flush()


def test_runs() -> None:
    assert runs([3, 4, 5, 9, 0, 1, 1]) == [(3, 3), (9, 1), (0, 2), (1, 1)]
    assert runs([]) == []


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_structured_reads_in_any_chunking_order_and_byte_split(data: st.DataObject) -> None:
    """A read answered as any mix of data and hole chunks, in any order, arriving in any
    byte split, interleaved with another command's answer, gives exactly the bytes."""
    length = data.draw(st.integers(1, 300))
    content = bytearray(data.draw(st.binary(min_size=length, max_size=length)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, length - 1), max_size=8))
                      if length > 1 else []))
    bounds = list(zip([0, *cuts], [*cuts, length], strict=True))
    t = tx()
    h = t.read(4096, length)
    other = t.flush()
    chunks = []
    for lo, hi in bounds:
        if data.draw(st.booleans()):
            content[lo:hi] = bytes(hi - lo)
            chunks.append(hole_chunk(h, 4096 + lo, hi - lo))
        else:
            chunks.append(data_chunk(h, 4096 + lo, bytes(content[lo:hi])))
    order = data.draw(st.permutations(range(len(chunks))))
    stream = b"".join(chunks[i] for i in order) + chunk(h, p.REPLY_TYPE_NONE, done=True)
    insert = data.draw(st.sampled_from([0, len(stream)]))
    stream = stream[:insert] + chunk(other, p.REPLY_TYPE_NONE, done=True) + stream[insert:]
    splits = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    for lo, hi in zip([0, *splits], [*splits, len(stream)], strict=True):
        if hi > lo:  # an empty read would mean "connection closed"
            t.receive_data(stream[lo:hi])
    got = {e.handle: e for e in events(t)}
    assert got[h].data == bytes(content) and got[other].error is None and t.in_flight == 0
