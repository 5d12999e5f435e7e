"""The NBD client protocol, sans-IO (UNTRUSTED side, no sockets, no event loop).

Two state machines in the h11 style: feed them the bytes the server sent
(:meth:`receive_data`), take the bytes to send (:meth:`data_to_send`), read results.

* :class:`Handshake` -- the fixed-newstyle negotiation: optionally
  ``NBD_OPT_STRUCTURED_REPLY``, then ``NBD_OPT_GO`` (falling back to
  ``NBD_OPT_EXPORT_NAME`` on a server that does not know GO).  Ends in an
  :class:`ExportInfo` (size, transmission flags, block size limits).
* :class:`Transmission` -- requests (READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, DISC) with
  64-bit handles, and replies, simple or structured (data, hole, error and none chunks,
  in any order), matched back to their request by handle.

Everything the server sends is checked: magics, the option echoed back, lengths, that a
structured read covers its range exactly once, that a handle is one we are waiting for.
A server that breaks the protocol gets :class:`NBDProtocolError` (the connection cannot
be trusted to stay in step afterwards); a well-formed error reply to one command is an
:class:`NBDCommandError` for that command only.  The byte layouts follow the public
specification (NetworkBlockDevice/nbd, ``doc/proto.md``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._backends import BackendIOError

__all__ = [
    "Completed", "ExportInfo", "Handshake", "NBDCommandError", "NBDError", "NBDOptionError",
    "NBDProtocolError", "Transmission",
]

# -- constants (network byte order) ------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OLDSTYLE_MAGIC = 0x00420281861253
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1 << 0  # handshake flags (server) / client flags
FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8

REP_ACK = 1
REP_INFO = 3
REP_ERR_BIT = 1 << 31
REP_ERR_UNSUP = REP_ERR_BIT | 1
_REP_ERRORS = {REP_ERR_BIT | 1: "unsupported option", REP_ERR_BIT | 2: "refused by policy",
               REP_ERR_BIT | 3: "invalid option", REP_ERR_BIT | 4: "unsupported on platform",
               REP_ERR_BIT | 5: "TLS required", REP_ERR_BIT | 6: "unknown export",
               REP_ERR_BIT | 7: "server shutting down", REP_ERR_BIT | 8: "block size required",
               REP_ERR_BIT | 9: "request too big", REP_ERR_BIT | 10: "extended headers required"}

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

TFLAG_HAS_FLAGS = 1 << 0  # transmission flags
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
_CMD_NAMES = {CMD_READ: "read", CMD_WRITE: "write", CMD_FLUSH: "flush", CMD_TRIM: "trim",
              CMD_WRITE_ZEROES: "write-zeroes"}

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_ERROR_BIT = 1 << 15
REPLY_TYPE_ERROR = REPLY_TYPE_ERROR_BIT | 1
REPLY_TYPE_ERROR_OFFSET = REPLY_TYPE_ERROR_BIT | 2

ERRNO_NAMES = {1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC",
               75: "EOVERFLOW", 95: "ENOTSUP", 108: "ESHUTDOWN"}

MAX_STRING = 4096  # the spec's bound on names and messages
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024  # what every server accepts, absent block size info
MAX_OPTION_REPLY = 64 * 1024  # more than any option reply we ask for; bounds buffering

_OPT_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
_REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
_SIMPLE = struct.Struct(">IIQ")  # magic, error, handle
_STRUCTURED = struct.Struct(">IHHQI")  # magic, flags, type, handle, length


class NBDError(BackendIOError):
    """Base of NBD failures; a :class:`BackendIOError` so the device reports ``io``."""


class NBDProtocolError(NBDError):
    """The server broke the protocol; the connection is out of step and must be dropped."""


class NBDOptionError(NBDError):
    """The server refused the negotiation (unknown export, TLS required, too old...)."""


class NBDCommandError(NBDError):
    """The server answered one command with an error (``errno`` as the spec numbers it)."""

    def __init__(self, command: str, errno: int, message: str = "") -> None:
        name = ERRNO_NAMES.get(errno, f"errno {errno}")
        super().__init__(f"NBD {command} failed: {name}" + (f" ({message})" if message else ""))
        self.command = command
        self.errno = errno


@dataclass(frozen=True)
class ExportInfo:
    """What negotiation learned about the export."""

    size: int
    flags: int
    structured: bool
    min_block: int = 1
    preferred_block: int = 4096
    max_payload: int = DEFAULT_MAX_PAYLOAD

    def has(self, flag: int) -> bool:
        """True if the transmission flags advertise ``flag``."""
        return bool(self.flags & TFLAG_HAS_FLAGS and self.flags & flag)


class _Buffer:
    """Received bytes not yet parsed."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> None:
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def peek(self, n: int) -> bytes | None:
        return bytes(self._data[:n]) if len(self._data) >= n else None

    def take(self, n: int) -> bytes | None:
        if len(self._data) < n:
            return None
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def rest(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


def _text(raw: bytes) -> str:
    return raw[:200].decode("utf-8", "replace")


# -- handshake ---------------------------------------------------------------------------------


class Handshake:
    """Client side of the fixed-newstyle handshake for one export.

    States: ``greeting`` (waiting for NBDMAGIC/IHAVEOPT/flags), ``structured`` (waiting
    for the answer to STRUCTURED_REPLY), ``go`` (INFO replies then ACK),
    ``export_name`` (the old-style answer to EXPORT_NAME), ``done``.
    """

    def __init__(self, export: str = "", *, structured: bool = True) -> None:
        name = export.encode()
        if len(name) > MAX_STRING:
            raise NBDOptionError("export name longer than 4096 bytes")
        self._name = name
        self._want_structured = structured
        self._structured = False
        self._no_zeroes = False
        self._state = "greeting"
        self._in = _Buffer()
        self._out = bytearray()
        self._size: int | None = None
        self._flags = 0
        self._block = (1, 4096, DEFAULT_MAX_PAYLOAD)
        self.info: ExportInfo | None = None

    @property
    def done(self) -> bool:
        """True once the export is open (:attr:`info` is set)."""
        return self.info is not None

    def data_to_send(self) -> bytes:
        """Bytes the client must send now (possibly empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def trailing_data(self) -> bytes:
        """Bytes received after the handshake ended (they belong to transmission)."""
        return self._in.rest()

    def receive_data(self, data: bytes) -> None:
        """Consume bytes from the server; raises on a refusal or a protocol error."""
        if not data and not self.done:
            raise NBDProtocolError(f"server closed the connection during {self._state}")
        self._in.feed(data)
        while not self.done and self._step():
            pass

    def _option(self, option: int, payload: bytes = b"") -> None:
        self._out += struct.pack(">QII", IHAVEOPT, option, len(payload)) + payload

    def _step(self) -> bool:
        """Parse one unit if complete; False when more bytes are needed."""
        if self._state == "greeting":
            return self._greeting()
        if self._state == "export_name":
            return self._export_name_reply()
        head = self._in.peek(_OPT_REPLY.size)
        if head is None:
            return False
        magic, option, rtype, length = _OPT_REPLY.unpack(head)
        if magic != OPT_REPLY_MAGIC:
            raise NBDProtocolError(f"bad option reply magic {magic:#x}")
        if length > MAX_OPTION_REPLY:
            raise NBDProtocolError(f"option reply of {length} bytes")
        raw = self._in.take(_OPT_REPLY.size + length)
        if raw is None:
            return False
        payload = raw[_OPT_REPLY.size:]
        expected = OPT_STRUCTURED_REPLY if self._state == "structured" else OPT_GO
        if option != expected:
            raise NBDProtocolError(f"reply for option {option}, expected {expected}")
        if self._state == "structured":
            self._structured_reply(rtype, payload)
        else:
            self._go_reply(rtype, payload)
        return True

    def _greeting(self) -> bool:
        raw = self._in.take(18)
        if raw is None:
            return False
        magic, second, hflags = struct.unpack(">QQH", raw)
        if magic != NBDMAGIC:
            raise NBDProtocolError("not an NBD server (no NBDMAGIC)")
        if second == OLDSTYLE_MAGIC:
            raise NBDOptionError("oldstyle NBD servers are not supported")
        if second != IHAVEOPT:
            raise NBDProtocolError(f"bad handshake magic {second:#x}")
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise NBDOptionError("server does not speak fixed newstyle NBD")
        self._no_zeroes = bool(hflags & FLAG_NO_ZEROES)
        self._out += struct.pack(">I", FLAG_FIXED_NEWSTYLE
                                 | (FLAG_NO_ZEROES if self._no_zeroes else 0))
        if self._want_structured:
            self._state = "structured"
            self._option(OPT_STRUCTURED_REPLY)
        else:
            self._send_go()
        return True

    def _send_go(self) -> None:
        self._state = "go"
        # name, then one information request: the block size constraints
        self._option(OPT_GO, struct.pack(">I", len(self._name)) + self._name
                     + struct.pack(">HH", 1, INFO_BLOCK_SIZE))

    def _structured_reply(self, rtype: int, payload: bytes) -> None:
        if rtype == REP_ACK:
            self._structured = True
        elif not rtype & REP_ERR_BIT:
            raise NBDProtocolError(f"unexpected reply {rtype} to STRUCTURED_REPLY")
        # any error: carry on with simple replies
        self._send_go()

    def _go_reply(self, rtype: int, payload: bytes) -> None:
        if rtype == REP_INFO:
            self._info(payload)
        elif rtype == REP_ACK:
            if self._size is None:
                raise NBDProtocolError("GO acknowledged without the export's size")
            self._finish()
        elif rtype == REP_ERR_UNSUP:
            # a server older than GO: EXPORT_NAME, whose answer has no reply header
            self._state = "export_name"
            self._option(OPT_EXPORT_NAME, self._name)
        elif rtype & REP_ERR_BIT:
            what = _REP_ERRORS.get(rtype, f"error {rtype & ~REP_ERR_BIT}")
            detail = f": {_text(payload)}" if payload else ""
            raise NBDOptionError(f"server refused export {self._name.decode()!r}: {what}"
                                 + detail)
        else:
            raise NBDProtocolError(f"unexpected reply {rtype} to GO")

    def _info(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise NBDProtocolError("INFO reply without a type")
        (itype,) = struct.unpack(">H", payload[:2])
        if itype == INFO_EXPORT:
            if len(payload) != 12:
                raise NBDProtocolError("malformed NBD_INFO_EXPORT")
            self._size, self._flags = struct.unpack(">QH", payload[2:])
        elif itype == INFO_BLOCK_SIZE:
            if len(payload) != 14:
                raise NBDProtocolError("malformed NBD_INFO_BLOCK_SIZE")
            lo, pref, hi = struct.unpack(">III", payload[2:])
            if not (1 <= lo <= pref <= hi) or lo & (lo - 1) or pref & (pref - 1):
                raise NBDProtocolError(f"inconsistent block sizes {lo}/{pref}/{hi}")
            self._block = (lo, pref, hi)
        # other information types are optional to understand: ignore them

    def _export_name_reply(self) -> bool:
        need = 10 if self._no_zeroes else 134
        raw = self._in.take(need)
        if raw is None:
            return False
        self._size, self._flags = struct.unpack(">QH", raw[:10])
        self._finish()
        return True

    def _finish(self) -> None:
        assert self._size is not None
        lo, pref, hi = self._block
        self.info = ExportInfo(size=self._size, flags=self._flags, structured=self._structured,
                               min_block=lo, preferred_block=pref,
                               max_payload=min(hi, DEFAULT_MAX_PAYLOAD))
        self._state = "done"


# -- transmission ------------------------------------------------------------------------------


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
        self._in = _Buffer()
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
        self._out += _REQUEST.pack(REQUEST_MAGIC, flags, cmd, handle, offset, length) + payload
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
            self._out += _REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0)
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
        head = self._in.peek(_SIMPLE.size)
        if head is None:
            return False
        _, error, handle = _SIMPLE.unpack(head)
        p = self._lookup(handle)
        if p.cmd == CMD_READ and not error:
            if self.info.structured:
                raise NBDProtocolError("simple reply with data after structured replies")
            raw = self._in.take(_SIMPLE.size + p.length)
            if raw is None:
                return False
            assert p.buf is not None
            p.buf[:] = raw[_SIMPLE.size:]
            p.covered.append((0, p.length))
        else:
            self._in.take(_SIMPLE.size)
            if error:
                p.error = NBDCommandError(_CMD_NAMES.get(p.cmd, str(p.cmd)), error)
        self._complete(handle, p)
        return True

    def _structured(self) -> bool:
        head = self._in.peek(_STRUCTURED.size)
        if head is None:
            return False
        _, flags, rtype, handle, length = _STRUCTURED.unpack(head)
        p = self._lookup(handle)
        if length > p.length + 8 + MAX_STRING + 6:  # the biggest chunk this command allows
            raise NBDProtocolError(f"{length}-byte chunk for a {p.length}-byte request")
        raw = self._in.take(_STRUCTURED.size + length)
        if raw is None:
            return False
        payload = raw[_STRUCTURED.size:]
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
            p.error = NBDCommandError(_CMD_NAMES.get(p.cmd, str(p.cmd)), error,
                                      _text(payload[6:6 + mlen]))

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
        name = _CMD_NAMES.get(p.cmd, str(p.cmd))
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


def runs(lbas: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers grouped as ``(first, count)``, in the given order."""
    out: list[tuple[int, int]] = []
    for lba in lbas:
        if out and out[-1][0] + out[-1][1] == lba:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((lba, 1))
    return out
