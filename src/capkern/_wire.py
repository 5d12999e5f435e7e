"""Message bodies on the wire: msgpack encoding with the kernel's limits (sans-IO).

A body crosses a domain boundary only as bytes.  The sender's trap encodes it here and
checks the limits (size, nesting depth, allowed types); the receiver's boundary decodes
fresh objects from those bytes, so no Python object is ever shared between domains.
Raw bytes offered by an untrusted sender (or a socket) go through :func:`decode_untrusted`
first, so a receiver never sees malformed bytes.

Allowed values: ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``,
``list``/``tuple`` (tuples arrive as lists) and ``dict`` with ``str`` or ``int`` keys.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import MalformedMessage, MessageTooLarge, NestingTooDeep, UnencodableBody

__all__ = ["Limits", "decode", "decode_untrusted", "encode", "encode_trusted", "encode_unwalked"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-message limits enforced at the kernel boundary."""

    max_body_bytes: int = 1 << 20
    max_depth: int = 32
    max_caps: int = 4
    max_label_len: int = 64
    max_queued_senders: int = 1024


_SCALARS = (type(None), bool, int, float, str, bytes)
_BYTES_LIKE = (*_SCALARS, bytearray, memoryview)
_SCALAR_TYPES = frozenset(_SCALARS)  # exact types: the fast test on the hot path
_KEY_TYPES = frozenset((str, int))


def _check_shape(obj: Any, depth: int, max_depth: int) -> None:
    """Walk containers; refuse nesting deeper than ``max_depth`` and foreign types."""
    if depth > max_depth:
        raise NestingTooDeep(f"body nests deeper than {max_depth} levels")
    scalars = _SCALAR_TYPES
    if type(obj) is dict:
        for key, item in obj.items():
            if type(key) not in _KEY_TYPES:
                raise UnencodableBody(f"map key {type(key).__name__} is not str or int")
            kind = type(item)
            if kind not in scalars:
                # a list of scalars one level down (most replies): walked here, no call
                if (kind is list or kind is tuple) and depth < max_depth:
                    for sub in item:
                        if type(sub) not in scalars:
                            break
                    else:
                        continue
                _check_shape(item, depth + 1, max_depth)
    elif type(obj) is list or type(obj) is tuple:
        for item in obj:
            if type(item) not in scalars:
                _check_shape(item, depth + 1, max_depth)
    elif isinstance(obj, dict | list | tuple):
        raise UnencodableBody(f"container subclass {type(obj).__name__} cannot cross")
    elif not isinstance(obj, _BYTES_LIKE):
        raise UnencodableBody(f"a {type(obj).__name__} cannot cross a domain boundary")


_local = threading.local()
_unpackb = msgpack.unpackb


def _packer() -> msgpack.Packer:
    """A reusable Packer (``msgpack.packb`` builds a new one per call); one per thread."""
    try:
        packer: msgpack.Packer | None = _local.packer
    except AttributeError:
        packer = None
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode(body: Any, limits: Limits) -> bytes:
    """Encode ``body`` at the sender's boundary, enforcing ``limits``."""
    if type(body) not in _SCALAR_TYPES:
        _check_shape(body, 1, limits.max_depth)
    try:
        packer = _local.packer  # _packer(), inlined: once per message
    except AttributeError:
        packer = _packer()
    try:
        raw: bytes = packer.pack(body)
    except (TypeError, OverflowError, ValueError) as exc:
        _local.packer = msgpack.Packer(use_bin_type=True)  # the old one may hold partial bytes
        raise UnencodableBody(f"body cannot be encoded: {exc}") from None
    if len(raw) > limits.max_body_bytes:
        raise MessageTooLarge(
            f"body is {len(raw)} bytes; the limit is {limits.max_body_bytes}"
        )
    return raw


def encode_trusted(body: Any, limits: Limits) -> bytes:
    """Encode a body the kernel built itself from plain lists, dicts, ints and bytes
    (the fault path's requests): no walk of its shape, only the size limit.  Anything
    msgpack cannot pack still fails as :class:`UnencodableBody`."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _packer()
    try:
        raw: bytes = packer.pack(body)
    except (TypeError, OverflowError, ValueError) as exc:
        _local.packer = msgpack.Packer(use_bin_type=True)
        raise UnencodableBody(f"body cannot be encoded: {exc}") from None
    if len(raw) > limits.max_body_bytes:
        raise MessageTooLarge(f"body is {len(raw)} bytes; the limit is {limits.max_body_bytes}")
    return raw


def encode_unwalked(body: Any, limits: Limits) -> tuple[bytes, Any]:
    """Encode ``body`` without walking its shape, and decode it again: for a message a
    closed schema will test (:func:`capkern._contract.closed`), which refuses whatever
    the walk would have refused, and for the kernel's own requests.  A body msgpack
    cannot pack or read back is walked then, so a wire-level fault is still reported as
    itself (:func:`encode`'s errors).  (:func:`encode_trusted` and :func:`decode`,
    inlined: every reply of a fault comes this way.)"""
    # The body is not walked, so a container subclass in it runs its own code (``items``,
    # ``__iter__``) inside the packer; if that code sends a message, the nested encode
    # must not write into this half-packed buffer (its bytes would be garbage for its
    # receiver): the thread's packer is taken out while it packs, and a nested encode
    # makes its own.
    try:
        packer = _local.packer
        del _local.packer
    except AttributeError:
        packer = msgpack.Packer(use_bin_type=True)
    try:
        raw: bytes = packer.pack(body)
    except Exception as exc:
        packer = msgpack.Packer(use_bin_type=True)  # the old one may hold partial bytes
        encode(body, limits)  # raises the fault the walk names
        raise UnencodableBody(f"body cannot be encoded: {exc}") from None
    finally:
        _local.packer = packer
    if len(raw) > limits.max_body_bytes:
        raise MessageTooLarge(f"body is {len(raw)} bytes; the limit is {limits.max_body_bytes}")
    try:
        return raw, _unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        encode(body, limits)
        raise UnencodableBody(f"body cannot be read back: {exc}") from None


def decode(raw: bytes) -> Any:
    """Decode bytes that already passed the kernel's checks (receiver's boundary)."""
    return _unpackb(raw, raw=False, strict_map_key=False)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack extension type {code} is not allowed")


def decode_untrusted(raw: bytes, limits: Limits) -> Any:
    """Validate raw bytes from an untrusted sender; return the decoded body.

    Refuses: oversized input, invalid msgpack, trailing bytes, extension types,
    invalid UTF-8 strings, non-str/int map keys, and nesting beyond the limit.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedMessage(f"raw body must be bytes, not {type(raw).__name__}")
    if len(raw) > limits.max_body_bytes:
        raise MessageTooLarge(f"body is {len(raw)} bytes; the limit is {limits.max_body_bytes}")
    size = len(raw)
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=False,
        ext_hook=_refuse_ext,
        timestamp=0,
        max_buffer_size=limits.max_body_bytes,
        # no container or string can hold more items or bytes than the body has
        max_str_len=size,
        max_bin_len=size,
        max_array_len=size,
        max_map_len=size // 2,
        max_ext_len=size,
    )
    try:
        unpacker.feed(raw)
        body = unpacker.unpack()
        if unpacker.tell() != size:
            raise MalformedMessage(f"{size - unpacker.tell()} trailing bytes after the body")
    except MalformedMessage:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise MalformedMessage(f"body is not valid msgpack: {type(exc).__name__}") from None
    try:
        _check_shape(body, 1, limits.max_depth)
    except UnencodableBody as exc:
        raise MalformedMessage(str(exc)) from None
    return body
