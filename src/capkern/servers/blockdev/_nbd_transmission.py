"""NBD requests and replies on an open export, sans-IO (UNTRUSTED side): see
:mod:`._nbd_proto`."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ._nbd_proto import (
    CMD_DISC,
    CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE,
    CMD_FLUSH,
    CMD_NAMES,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    MAX_STRING,
    REPLY_FLAG_DONE,
    REPLY_TYPE_ERROR,
    REPLY_TYPE_ERROR_BIT,
    REPLY_TYPE_ERROR_OFFSET,
    REPLY_TYPE_NONE,
    REPLY_TYPE_OFFSET_DATA,
    REPLY_TYPE_OFFSET_HOLE,
    REQUEST,
    REQUEST_MAGIC,
    SIMPLE,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED,
    STRUCTURED_REPLY_MAGIC,
    TFLAG_READ_ONLY,
    TFLAG_SEND_FUA,
    Buffer,
    ExportInfo,
    NBDCommandError,
    NBDError,
    NBDProtocolError,
    text,
)

__all__ = ["Completed", "Transmission"]


@dataclass
class Completed:
    """A finished command: ``data`` for a successful read, or the command's ``error``."""

    handle: int
    command: str
    data: bytes | None = None
    error: NBDCommandError | None = None


@dataclass
class _Pending:
    cmd: int
    offset: int
    length: int
    buf: bytearray | None = None
    covered: list[tuple[int, int]] = field(default_factory=list)
    error: NBDCommandError | None = None


class Transmission:
    """Requests and replies on an open export; handles match replies to requests.

    Replies may come in any order (and a structured read's chunks in any order); a
    command is reported once, by :meth:`next_event`, when its last reply arrives.
    """

    def __init__(self, info: ExportInfo) -> None:
        self.info = info
        self._next_handle = 1
        self._pending: dict[int, _Pending] = {}
        self._in = Buffer()
        self._out = bytearray()
        self._events: list[Completed] = []
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Commands sent and not yet answered."""
        return len(self._pending)

    def data_to_send(self) -> bytes:
        """Bytes of the requests queued so far."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _request(self, cmd: int, offset: int, length: int, flags: int = 0,
                 payload: bytes = b"") -> int:
        if self._closed:
            raise NBDProtocolError("connection is disconnected")
        if offset < 0 or length < 0 or offset + length > self.info.size:
            raise NBDError(f"{length} bytes at {offset} outside the {self.info.size}-byte export")
        if cmd in (CMD_READ, CMD_WRITE) and length > self.info.max_payload:
            raise NBDError(f"{length} bytes exceed the server's {self.info.max_payload}")
        handle = self._next_handle
        self._next_handle = (handle + 1) & 0xFFFF_FFFF_FFFF_FFFF or 1
        self._out += REQUEST.pack(REQUEST_MAGIC, flags, cmd, handle, offset, length) + payload
        self._pending[handle] = _Pending(cmd, offset, length,
                                         bytearray(length) if cmd == CMD_READ else None)
        return handle

    def read(self, offset: int, length: int) -> int:
        """Queue a READ; returns its handle."""
        return self._request(CMD_READ, offset, length)

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> int:
        """Queue a WRITE of ``data`` (forced to media with ``fua`` if the server can)."""
        if self.info.has(TFLAG_READ_ONLY):
            raise NBDError("the export is read-only")
        flags = CMD_FLAG_FUA if fua and self.info.has(TFLAG_SEND_FUA) else 0
        return self._request(CMD_WRITE, offset, len(data), flags, bytes(data))

    def flush(self) -> int:
        """Queue a FLUSH (the caller checks the server advertised it)."""
        return self._request(CMD_FLUSH, 0, 0)

    def trim(self, offset: int, length: int) -> int:
        """Queue a TRIM: the range's contents become unspecified (a hint only)."""
        return self._request(CMD_TRIM, offset, length)

    def write_zeroes(self, offset: int, length: int, *, may_trim: bool = True) -> int:
        """Queue a WRITE_ZEROES: the range reads as zeros afterwards, guaranteed."""
        return self._request(CMD_WRITE_ZEROES, offset, length,
                             0 if may_trim else CMD_FLAG_NO_HOLE)

    def disconnect(self) -> None:
        """Queue a DISC; no further request may be made."""
        if not self._closed:
            self._out += REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0)
            self._closed = True

    def next_event(self) -> Completed | None:
        """The next finished command, or None."""
        return self._events.pop(0) if self._events else None

    def receive_data(self, data: bytes) -> None:
        """Consume reply bytes; a protocol violation raises :class:`NBDProtocolError`."""
        if not data:
            if self._pending:
                raise NBDProtocolError(
                    f"server closed the connection with {len(self._pending)} command(s) "
                    "unanswered")
            return
        self._in.feed(data)
        while self._parse_one():
            pass

    def _parse_one(self) -> bool:
        head = self._in.peek(4)
        if head is None:
            return False
        (magic,) = struct.unpack(">I", head)
        if magic == SIMPLE_REPLY_MAGIC:
            return self._simple()
        if magic == STRUCTURED_REPLY_MAGIC:
            if not self.info.structured:
                raise NBDProtocolError("structured reply that was never negotiated")
            return self._structured()
        raise NBDProtocolError(f"bad reply magic {magic:#x}")

    def _lookup(self, handle: int) -> _Pending:
        pending = self._pending.get(handle)
        if pending is None:
            raise NBDProtocolError(f"reply for unknown handle {handle}")
        return pending

    def _simple(self) -> bool:
        head = self._in.peek(SIMPLE.size)
        if head is None:
            return False
        _, error, handle = SIMPLE.unpack(head)
        p = self._lookup(handle)
        if p.cmd == CMD_READ and not error:
            if self.info.structured:
                raise NBDProtocolError("simple reply with data after structured replies")
            raw = self._in.take(SIMPLE.size + p.length)
            if raw is None:
                return False
            assert p.buf is not None
            p.buf[:] = raw[SIMPLE.size:]
            p.covered.append((0, p.length))
        else:
            self._in.take(SIMPLE.size)
            if error:
                p.error = NBDCommandError(CMD_NAMES.get(p.cmd, str(p.cmd)), error)
        self._complete(handle, p)
        return True

    def _structured(self) -> bool:
        head = self._in.peek(STRUCTURED.size)
        if head is None:
            return False
        _, flags, rtype, handle, length = STRUCTURED.unpack(head)
        p = self._lookup(handle)
        if length > p.length + 8 + MAX_STRING + 6:  # the biggest chunk this command allows
            raise NBDProtocolError(f"{length}-byte chunk for a {p.length}-byte request")
        raw = self._in.take(STRUCTURED.size + length)
        if raw is None:
            return False
        payload = raw[STRUCTURED.size:]
        if rtype == REPLY_TYPE_NONE:
            if length or not flags & REPLY_FLAG_DONE:
                raise NBDProtocolError("NONE chunk with a payload or without DONE")
        elif rtype & REPLY_TYPE_ERROR_BIT:
            self._error_chunk(p, rtype, payload)
        elif p.cmd != CMD_READ:
            raise NBDProtocolError(f"data chunk type {rtype} answering a non-read")
        elif rtype == REPLY_TYPE_OFFSET_DATA:
            if length < 9:
                raise NBDProtocolError("OFFSET_DATA chunk without data")
            (offset,) = struct.unpack(">Q", payload[:8])
            self._place(p, offset, payload[8:])
        elif rtype == REPLY_TYPE_OFFSET_HOLE:
            if length != 12:
                raise NBDProtocolError("malformed OFFSET_HOLE chunk")
            offset, size = struct.unpack(">QI", payload)
            if size == 0:
                raise NBDProtocolError("empty OFFSET_HOLE chunk")
            self._place(p, offset, bytes(size))
        else:
            raise NBDProtocolError(f"unknown reply chunk type {rtype}")
        if flags & REPLY_FLAG_DONE:
            self._complete(handle, p)
        return True

    def _error_chunk(self, p: _Pending, rtype: int, payload: bytes) -> None:
        if len(payload) < 6:
            raise NBDProtocolError("error chunk too short")
        error, mlen = struct.unpack(">IH", payload[:6])
        extra = 8 if rtype == REPLY_TYPE_ERROR_OFFSET else 0
        known = rtype in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET)
        if known and len(payload) != 6 + mlen + extra:
            raise NBDProtocolError("error chunk length does not match its message")
        if error == 0:
            raise NBDProtocolError("error chunk with error 0")
        if p.error is None:  # the first error is the one reported
            p.error = NBDCommandError(CMD_NAMES.get(p.cmd, str(p.cmd)), error,
                                      text(payload[6:6 + mlen]))

    @staticmethod
    def _place(p: _Pending, offset: int, data: bytes) -> None:
        start = offset - p.offset
        end = start + len(data)
        if start < 0 or end > p.length:
            raise NBDProtocolError(f"chunk at {offset}+{len(data)} outside the request")
        for lo, hi in p.covered:
            if start < hi and lo < end:
                raise NBDProtocolError(f"chunk at {offset} overlaps an earlier one")
        assert p.buf is not None
        p.buf[start:end] = data
        p.covered.append((start, end))

    def _complete(self, handle: int, p: _Pending) -> None:
        del self._pending[handle]
        name = CMD_NAMES.get(p.cmd, str(p.cmd))
        if p.error is not None:
            self._events.append(Completed(handle, name, error=p.error))
            return
        if p.cmd == CMD_READ:
            if sum(hi - lo for lo, hi in p.covered) != p.length:
                raise NBDProtocolError(f"read of {p.length} bytes at {p.offset} answered "
                                       "incompletely")
            assert p.buf is not None
            self._events.append(Completed(handle, name, data=bytes(p.buf)))
        else:
            self._events.append(Completed(handle, name))
