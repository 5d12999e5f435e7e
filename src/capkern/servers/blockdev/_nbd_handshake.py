"""NBD fixed-newstyle negotiation, sans-IO (UNTRUSTED side): see :mod:`._nbd_proto`."""

from __future__ import annotations

import struct

from ._nbd_proto import (
    DEFAULT_MAX_PAYLOAD,
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    INFO_EXPORT,
    MAX_OPTION_REPLY,
    MAX_STRING,
    NBDMAGIC,
    OLDSTYLE_MAGIC,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_REPLY,
    OPT_REPLY_MAGIC,
    OPT_STRUCTURED_REPLY,
    REP_ACK,
    REP_ERR_BIT,
    REP_ERR_UNSUP,
    REP_ERRORS,
    REP_INFO,
    Buffer,
    ExportInfo,
    NBDOptionError,
    NBDProtocolError,
    text,
)

__all__ = ["Handshake"]


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
        self._in = Buffer()
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
        head = self._in.peek(OPT_REPLY.size)
        if head is None:
            return False
        magic, option, rtype, length = OPT_REPLY.unpack(head)
        if magic != OPT_REPLY_MAGIC:
            raise NBDProtocolError(f"bad option reply magic {magic:#x}")
        if length > MAX_OPTION_REPLY:
            raise NBDProtocolError(f"option reply of {length} bytes")
        raw = self._in.take(OPT_REPLY.size + length)
        if raw is None:
            return False
        payload = raw[OPT_REPLY.size:]
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
            what = REP_ERRORS.get(rtype, f"error {rtype & ~REP_ERR_BIT}")
            detail = f": {text(payload)}" if payload else ""
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
