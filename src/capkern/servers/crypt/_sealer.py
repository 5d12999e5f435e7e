"""Sans-IO sealing of pages: AEAD with the page's binding as associated data (TRUSTED).

A sealed page has the public layout of :mod:`capkern._pagefmt`::

    nonce (12 bytes) || ciphertext (page_size bytes) || tag (16 bytes)

The associated data binds the page to its place and its age -- the boot, the address
space and its incarnation, the virtual page and the kernel-held version -- and is never
stored: the kernel recomputes it on page-in, so a blob presented for any other place or
any other (older) version fails authentication and is refused with :class:`SealError`.

Why a nonce can never repeat under one key
------------------------------------------
* Every :class:`Sealer` draws a fresh random 256-bit key when it is constructed, i.e.
  once per boot; no two sealers share a key, and no key is ever loaded from anywhere.
* Its nonces are ``4 zero bytes || a 64-bit big-endian counter`` that starts at 0 and
  only ever increases; a nonce is consumed before the AEAD call, so even a failed call
  never hands the same nonce out twice.
* The key and the counter exist only in this object, in trusted memory.  Nothing is ever
  restored from the untrusted side (the pager, the disk, a sealed blob's nonce field):
  the nonce stored in a blob is read on unseal only, never fed back into the counter.

So each (key, nonce) pair is used for at most one encryption.  The counter stops with
:class:`SealerExhausted` at 2**48 seals, far inside AES-GCM's safe number of
invocations for one key; a reboot (a new sealer) brings a new key.

This module does no I/O and imports nothing of the untrusted servers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..._pagefmt import NONCE_LEN, PAGE_SIZE, TAG_LEN

__all__ = ["CIPHERS", "Binding", "SealError", "Sealer", "SealerExhausted", "associated_data"]

CIPHERS = ("aes-256-gcm", "chacha20-poly1305", "null")
NONCE_LIMIT = 1 << 48
BOOT_ID_LEN = 16
KEY_LEN = 32

_AD_PREFIX = b"capkern.page.v1\0"
# prefix(16) || boot(16) || asid(u32) || incarnation(u64) || vpn(u64) || version(u64)
_AD = struct.Struct(">16s16sIQQQ")
_NONCE = struct.Struct(">4xQ")
_ZERO_NONCE = bytes(NONCE_LEN)


class SealError(Exception):
    """A sealed page was refused: wrong length, bad tag, wrong binding or old version.

    The message never carries key material or page content.
    """


class SealerExhausted(Exception):
    """The nonce counter reached its limit; this sealer will not seal again."""


def associated_data(boot: bytes, asid: int, incarnation: int, vpn: int, version: int) -> bytes:
    """The associated data binding a page to its place and version: domain-separated,
    fixed-width; ValueError on a bad field.  :class:`Binding` names the same fields; the
    sealer's server calls this directly (one call per page, no object built)."""
    if len(boot) != BOOT_ID_LEN:
        raise ValueError(f"boot id must be {BOOT_ID_LEN} bytes, got {len(boot)}")
    try:
        return _AD.pack(_AD_PREFIX, boot, asid, incarnation, vpn, version)
    except struct.error as exc:
        raise ValueError(f"binding field out of range: {exc}") from None


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a sealed page belongs and how new it is (the AEAD's associated data)."""

    boot: bytes  # 16-byte boot id
    asid: int  # address-space id, 0 <= asid < 2**32
    incarnation: int  # incarnation of that address space, 0 <= x < 2**64
    vpn: int  # virtual page number, 0 <= x < 2**64
    version: int  # page version held by the kernel, 0 <= x < 2**64

    def associated_data(self) -> bytes:
        """Domain-separated, fixed-width encoding; ValueError on a bad field."""
        return associated_data(self.boot, self.asid, self.incarnation, self.vpn, self.version)


class Sealer:
    """Seals and unseals pages under a key that never leaves this object.

    ``cipher`` is ``"aes-256-gcm"`` (default), ``"chacha20-poly1305"`` or ``"null"``.

    ``"null"`` is an INSECURE baseline for benchmarks only: it provides NO
    confidentiality -- the plaintext travels in the clear as the blob's body, after an
    all-zero nonce.  Its tag (the first 16 bytes of a BLAKE2b keyed with this sealer's
    key over ``associated_data + plaintext``) still refuses tampering and misplaced or
    old pages, and a non-zero nonce field is refused too.
    """

    __slots__ = ("_aead", "_blob_len", "_counter", "_key", "_page_size", "cipher")

    def __init__(self, cipher: str = "aes-256-gcm", *, page_size: int = PAGE_SIZE) -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown cipher {cipher!r}; choose from {', '.join(CIPHERS)}")
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.cipher = cipher
        self._page_size = page_size
        self._blob_len = NONCE_LEN + page_size + TAG_LEN
        self._counter = 0
        self._key = os.urandom(KEY_LEN)
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        if cipher == "aes-256-gcm":
            self._aead = AESGCM(self._key)
        elif cipher == "chacha20-poly1305":
            self._aead = ChaCha20Poly1305(self._key)

    def __repr__(self) -> str:
        return f"<Sealer cipher={self.cipher!r} seals={self._counter}>"

    @property
    def seals(self) -> int:
        """How many pages this sealer has sealed (= the next nonce counter value)."""
        return self._counter

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def blob_len(self) -> int:
        """Length of every sealed blob: nonce + page_size + tag."""
        return self._blob_len

    def seal(self, binding: Binding, plaintext: bytes) -> bytes:
        """``nonce || ciphertext || tag`` for ``plaintext`` bound to ``binding``."""
        return self.seal_ad(binding.associated_data(), plaintext)

    def unseal(self, binding: Binding, blob: bytes) -> bytes:
        """The plaintext, only if ``blob`` is exactly what this sealer sealed for
        ``binding``; otherwise :class:`SealError`."""
        return self.unseal_ad(binding.associated_data(), blob)

    def seal_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """:meth:`seal` with the binding already encoded by :func:`associated_data`
        (the server's per-page path: no :class:`Binding` object is built)."""
        if len(plaintext) != self._page_size:
            raise ValueError(f"page is {len(plaintext)} bytes, expected {self._page_size}")
        counter = self._counter
        if counter >= NONCE_LIMIT:
            raise SealerExhausted("nonce counter exhausted; a new boot brings a new key")
        self._counter = counter + 1  # consumed before use: never handed out twice
        aead = self._aead
        if aead is None:
            return _ZERO_NONCE + plaintext + self._null_tag(ad, plaintext)
        nonce = _NONCE.pack(counter)
        return nonce + aead.encrypt(nonce, plaintext, ad)

    def unseal_ad(self, ad: bytes, blob: bytes) -> bytes:
        """:meth:`unseal` with the binding already encoded by :func:`associated_data`:
        the plaintext only if ``blob`` authenticates under ``ad``, else :class:`SealError`."""
        if not isinstance(blob, bytes):
            raise SealError(f"sealed page must be bytes, not {type(blob).__name__}")
        if len(blob) != self._blob_len:
            raise SealError(f"sealed page is {len(blob)} bytes, expected {self._blob_len}")
        aead = self._aead
        if aead is None:
            plaintext = blob[NONCE_LEN:-TAG_LEN]
            expected = self._null_tag(ad, plaintext)
            nonce_ok = hmac.compare_digest(blob[:NONCE_LEN], _ZERO_NONCE)
            if not (hmac.compare_digest(blob[-TAG_LEN:], expected) and nonce_ok):
                raise SealError("integrity check failed")
            return plaintext
        try:
            return aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], ad)
        except InvalidTag:
            raise SealError("integrity check failed") from None

    def _null_tag(self, ad: bytes, plaintext: bytes) -> bytes:
        h = hashlib.blake2b(key=self._key)
        h.update(ad)
        h.update(plaintext)
        return h.digest()[:TAG_LEN]

    def seal_many(self, items: Sequence[tuple[Binding, bytes]]) -> list[bytes]:
        """Seal each ``(binding, plaintext)``; raises as :meth:`seal` does."""
        seal = self.seal
        return [seal(binding, plaintext) for binding, plaintext in items]

    def unseal_many(self, items: Sequence[tuple[Binding, bytes]]) -> list[bytes | SealError]:
        """Unseal each ``(binding, blob)``: the plaintext, or the item's :class:`SealError`."""
        unseal = self.unseal
        out: list[bytes | SealError] = []
        for binding, blob in items:
            try:
                out.append(unseal(binding, blob))
            except SealError as exc:
                out.append(exc)
        return out
