"""Length-prefixed msgpack frames between the kernel and an out-of-process server (sans-IO).

A frame is a 4-byte big-endian length, then that many bytes of msgpack holding one
list ``[kind, ...fields]``.  Only frames cross the socket: no object references, no
shared memory.  The decoder is fed whatever bytes arrive and yields whole frames; it
judges the length *before* buffering the body, so a peer announcing a huge frame is
refused at once (never buffered), and a frame that is not msgpack of the expected shape
is refused with :class:`~capkern.errors.MalformedMessage` -- counted by the caller, never
a crash.  No I/O and no event loop here (h11 style); the Trio glue lives elsewhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import MalformedMessage, MessageTooLarge

__all__ = ["FrameDecoder", "FrameLimits", "encode_frame"]

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds on what one frame may hold.

    ``max_frame`` must leave room above the kernel's body limit for the frame's own
    fields (kind, ids, label, badge): a body the kernel accepts must fit in one frame.
    """

    max_frame: int = (1 << 20) + 4096
    max_fields: int = 16


def encode_frame(fields: list[Any], limits: FrameLimits = FrameLimits()) -> bytes:
    """Encode one frame; refuse one larger than the peer would accept."""
    if not fields or not isinstance(fields[0], str):
        raise MalformedMessage("a frame starts with its kind (a str)")
    payload: bytes = msgpack.packb(fields, use_bin_type=True)
    if len(payload) > limits.max_frame:
        raise MessageTooLarge(f"frame is {len(payload)} bytes; the limit is {limits.max_frame}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, iterate :meth:`frames`.

    After a refused frame the stream cannot be trusted to be in sync again (the length
    prefix may itself be garbage), so a framing error is *sticky*: ``broken`` says why,
    and the owner is expected to drop the connection (for a child: the same as a crash).
    A well-framed body that is not a valid frame (bad msgpack, wrong shape) is skipped,
    counted in ``refused``, and the stream goes on.
    """

    def __init__(self, limits: FrameLimits = FrameLimits()) -> None:
        self.limits = limits
        self._buf = bytearray()
        self.refused = 0
        self.broken: str | None = None
        self.frames_in = 0

    def feed(self, data: bytes) -> None:
        if self.broken is None:
            self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> list[Any] | None:
        """The next whole frame, or None if more bytes are needed (or the stream broke).

        Raises :class:`MalformedMessage` for a well-framed but invalid body (skipped),
        and :class:`MessageTooLarge` when a length prefix exceeds the limit (sticky)."""
        while True:
            if self.broken is not None or len(self._buf) < _HEADER.size:
                return None
            (length,) = _HEADER.unpack_from(self._buf)
            if length > self.limits.max_frame or length == 0:
                self.broken = f"frame length {length} outside 1..{self.limits.max_frame}"
                self._buf.clear()
                self.refused += 1
                raise MessageTooLarge(self.broken)
            end = _HEADER.size + length
            if len(self._buf) < end:
                return None
            payload = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            fields = self._parse(payload)
            self.frames_in += 1
            return fields

    def frames(self) -> Iterator[list[Any]]:
        """Every whole frame buffered so far; invalid bodies raise (and are skipped)."""
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def _parse(self, payload: bytes) -> list[Any]:
        size = len(payload)
        try:
            # one call, every length bounded by the frame's own size; trailing bytes
            # raise ExtraData (cheaper than an Unpacker per frame)
            fields = msgpack.unpackb(
                payload, raw=False, strict_map_key=False, max_str_len=size,
                max_bin_len=size, max_array_len=size, max_map_len=size // 2, max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises many types for bad input
            self.refused += 1
            raise MalformedMessage(f"frame is not valid msgpack: {type(exc).__name__}") from None
        if (not isinstance(fields, list) or not fields or not isinstance(fields[0], str)
                or len(fields) > self.limits.max_fields):
            self.refused += 1
            raise MalformedMessage("frame is not a list starting with its kind")
        return fields
