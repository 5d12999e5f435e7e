"""The NBD client protocol, sans-IO (UNTRUSTED side, no sockets, no event loop):
constants, errors and what the two state machines share.

Two state machines in the h11 style: feed them the bytes the server sent
(:meth:`receive_data`), take the bytes to send (:meth:`data_to_send`), read results.

* :class:`~._nbd_handshake.Handshake` -- the fixed-newstyle negotiation: optionally
  ``NBD_OPT_STRUCTURED_REPLY``, then ``NBD_OPT_GO`` (falling back to
  ``NBD_OPT_EXPORT_NAME`` on a server that does not know GO).  Ends in an
  :class:`ExportInfo` (size, transmission flags, block size limits).
* :class:`~._nbd_transmission.Transmission` -- requests (READ, WRITE, FLUSH, TRIM,
  WRITE_ZEROES, DISC) with 64-bit handles, and replies, simple or structured (data,
  hole, error and none chunks, in any order), matched back to their request by handle.

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
from dataclasses import dataclass

from ._backends import BackendIOError

__all__ = ["ExportInfo", "NBDCommandError", "NBDError", "NBDOptionError", "NBDProtocolError",
           "runs"]

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
REP_ERRORS = {REP_ERR_BIT | 1: "unsupported option", REP_ERR_BIT | 2: "refused by policy",
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
CMD_NAMES = {CMD_READ: "read", CMD_WRITE: "write", CMD_FLUSH: "flush", CMD_TRIM: "trim",
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

OPT_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
SIMPLE = struct.Struct(">IIQ")  # magic, error, handle
STRUCTURED = struct.Struct(">IHHQI")  # magic, flags, type, handle, length


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


class Buffer:
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


def text(raw: bytes) -> str:
    return raw[:200].decode("utf-8", "replace")


def runs(lbas: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers grouped as ``(first, count)``, in the given order."""
    out: list[tuple[int, int]] = []
    for lba in lbas:
        if out and out[-1][0] + out[-1][1] == lba:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((lba, 1))
    return out
