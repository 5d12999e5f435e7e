"""Erasure coding of sealed pages into tagged shards (TRUSTED, sans-IO).

A sealed blob (already encrypted and MACed as a whole by the sealer) of ``blob_len``
bytes is zero-padded to ``m * shard_len`` bytes, cut into ``m`` data shards and extended
to ``n`` shards with ``zfec`` (a systematic Reed-Solomon code: shards ``0..m-1`` are the
blob itself, any ``m`` distinct shards rebuild it).  Each stored shard is::

    shard data (shard_len bytes) || tag (16 bytes)

where ``tag = BLAKE2b-128(key, domain || n || m || index || len(context) || context ||
data)``.  The key is drawn per :class:`ErasureCode` (one per boot) and never leaves the
kernel; ``context`` is the page's binding (``Binding.associated_data()``: boot, address
space, incarnation, virtual page, version).  So a shard that was changed, truncated,
extended, presented under another index, for another page or version, or from another
boot, fails its tag, and the kernel knows exactly which pager to blame and which other
shard to fetch instead.  The whole blob's AEAD still checks the rebuilt page.

Why a per-shard tag and not only the AEAD: the AEAD says "the page is wrong" but not
which of the ``m`` shards made it wrong; trying every subset of ``m`` among ``n`` would
cost a decode and an unseal each.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zfec

from ..errors import ConfigError, IntegrityFault

__all__ = ["TAG_LEN", "ErasureCode", "NotEnoughShards", "Rebuilt"]

TAG_LEN = 16
KEY_LEN = 32
MAX_SHARDS = 256  # zfec's limit
_DOMAIN = b"capkern.shard.v1"
_HEAD = struct.Struct(">16sBBBI")  # domain, n-1, m, index, len(context)


class NotEnoughShards(IntegrityFault):
    """Fewer than ``m`` intact shards: the page cannot be rebuilt from what came back.

    ``bad`` are the indices whose shard failed its tag (the pagers to blame), ``missing``
    those that were not offered at all.
    """

    def __init__(self, needed: int, bad: list[int], missing: list[int]) -> None:
        super().__init__(f"{needed} intact shards needed: {len(bad)} corrupt {bad}, "
                         f"{len(missing)} missing")
        self.needed = needed
        self.bad = bad
        self.missing = missing


@dataclass(frozen=True)
class Rebuilt:
    """A rebuilt blob, the shards it came from, and the shards that failed their tag."""

    blob: bytes
    used: tuple[int, ...]
    bad: tuple[int, ...]


class ErasureCode:
    """``n`` shards of a ``blob_len``-byte sealed page, any ``m`` of which rebuild it."""

    def __init__(self, n: int, m: int, blob_len: int, *, key: bytes | None = None) -> None:
        for name, value in (("n", n), ("m", m), ("blob_len", blob_len)):
            if type(value) is not int or value < 1:
                raise ConfigError(f"erasure code {name} must be a positive int, not {value!r}")
        if not m <= n <= MAX_SHARDS:
            raise ConfigError(f"erasure code needs 1 <= m <= n <= {MAX_SHARDS}, got m={m} n={n}")
        if key is not None and len(key) != KEY_LEN:
            raise ConfigError(f"shard key must be {KEY_LEN} bytes")
        self.n = n
        self.m = m
        self.blob_len = blob_len
        self.shard_len = -(-blob_len // m)
        self._key = key if key is not None else os.urandom(KEY_LEN)
        self._encoder: Any = zfec.Encoder(m, n)
        self._decoder: Any = zfec.Decoder(m, n)

    def __repr__(self) -> str:
        return f"ErasureCode(n={self.n}, m={self.m}, blob_len={self.blob_len})"

    @property
    def stored_len(self) -> int:
        """Bytes of one stored shard (data and tag)."""
        return self.shard_len + TAG_LEN

    @property
    def overhead(self) -> float:
        """Bytes stored over all ``n`` pagers per byte of sealed blob."""
        return self.n * self.stored_len / self.blob_len

    def _tag(self, index: int, context: bytes, data: bytes) -> bytes:
        mac = hashlib.blake2b(key=self._key, digest_size=TAG_LEN)
        mac.update(_HEAD.pack(_DOMAIN, self.n - 1, self.m, index, len(context)))
        mac.update(context)
        mac.update(data)
        return mac.digest()

    def encode(self, blob: bytes, context: bytes) -> list[bytes]:
        """The ``n`` stored shards of ``blob`` (shard ``i`` goes to holder ``i``)."""
        if not isinstance(blob, bytes | bytearray) or len(blob) != self.blob_len:
            raise ValueError(f"a sealed blob of {self.blob_len} bytes is needed")
        padded = bytes(blob) + bytes(self.m * self.shard_len - len(blob))
        pieces = [padded[i * self.shard_len:(i + 1) * self.shard_len] for i in range(self.m)]
        shards: list[bytes] = self._encoder.encode(pieces) if self.n > self.m else pieces
        return [bytes(s) + self._tag(i, context, bytes(s)) for i, s in enumerate(shards)]

    def verify(self, index: int, stored: object, context: bytes) -> bool:
        """True if ``stored`` is exactly shard ``index`` of the page bound to ``context``.

        Anything else -- another type, another length, another index's or page's shard,
        a flipped bit anywhere -- is False; never an exception.
        """
        if (type(index) is not int or not 0 <= index < self.n
                or not isinstance(stored, bytes) or len(stored) != self.stored_len):
            return False
        data, tag = stored[:self.shard_len], stored[self.shard_len:]
        return hmac.compare_digest(tag, self._tag(index, context, data))

    def decode(self, offered: Mapping[int, object], context: bytes) -> Rebuilt:
        """Rebuild the blob from whatever shards came back (``{index: stored}``).

        Every offered shard is checked; the first ``m`` intact ones (data shards first:
        they need no arithmetic) rebuild the blob.  Raises :class:`NotEnoughShards`,
        naming the corrupt and the missing indices, when fewer than ``m`` are intact.
        """
        good: dict[int, bytes] = {}
        bad: list[int] = []
        for index in sorted(i for i in offered if type(i) is int):  # other keys: ignored
            stored = offered[index]
            if self.verify(index, stored, context):
                assert isinstance(stored, bytes)
                good[index] = stored[:self.shard_len]
            else:
                bad.append(index)
        if len(good) < self.m:
            missing = [i for i in range(self.n) if i not in offered]
            raise NotEnoughShards(self.m, bad, missing)
        use = sorted(good)[:self.m]
        if use == list(range(self.m)):
            pieces = [good[i] for i in use]
        else:
            pieces = list(self._decoder.decode([good[i] for i in use], use))
        blob = b"".join(bytes(p) for p in pieces)[:self.blob_len]
        return Rebuilt(blob, tuple(use), tuple(bad))
