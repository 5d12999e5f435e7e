"""Sans-IO sealing of pages: AEAD with the page's binding as associated data.

Why a nonce can never repeat under one key: every :class:`Sealer` draws a fresh random
256-bit key when it is made (once per boot, inside the sealer's domain), and its nonces
are ``4 zero bytes || a 64-bit counter`` that only ever increases.  The key and the
counter exist only in this object, in trusted memory; nothing is ever restored from the
untrusted side, so a (key, nonce) pair is used at most once.  The counter stops at 2**48
seals (far inside AES-GCM's bound for one key) with :class:`SealerExhausted`.

The associated data binds a sealed page to the boot, the address space and its
incarnation, the virtual page and the page's version; a blob presented for any other
place or version fails authentication.
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

from ...pagefmt import NONCE_LEN, PAGE_SIZE, TAG_LEN

__all__ = ["CIPHERS", "Binding", "SealError", "Sealer", "SealerExhausted"]

CIPHERS = ("aes-256-gcm", "chacha20-poly1305", "null")
NONCE_LIMIT = 1 << 48
_AD_PREFIX = b"capkern.page.v1\0"
_AD = struct.Struct(">16sIQQQ")
_NONCE = struct.Struct(">4xQ")


class SealError(Exception):
    """A sealed page was refused (wrong length, bad tag, wrong binding or version)."""


class SealerExhausted(Exception):
    """The nonce counter reached its limit; this sealer will not seal again."""


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a sealed page belongs and how new it is."""

    boot: bytes
    asid: int
    incarnation: int
    vpn: int
    version: int

    def associated_data(self) -> bytes:
        if len(self.boot) != 16:
            raise ValueError("boot id must be 16 bytes")
        try:
            return _AD_PREFIX + _AD.pack(self.boot, self.asid, self.incarnation, self.vpn,
                                         self.version)
        except struct.error as exc:
            raise ValueError(f"binding field out of range: {exc}") from None


class Sealer:
    """Seals and unseals pages under a key that never leaves this object."""

    def __init__(self, cipher: str = "aes-256-gcm", *, page_size: int = PAGE_SIZE) -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown cipher {cipher!r}; choose from {', '.join(CIPHERS)}")
        self.cipher = cipher
        self.page_size = page_size
        self.blob_len = NONCE_LEN + page_size + TAG_LEN
        self.seals = 0
        self._counter = 0
        self._key = os.urandom(32)
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        if cipher == "aes-256-gcm":
            self._aead = AESGCM(self._key)
        elif cipher == "chacha20-poly1305":
            self._aead = ChaCha20Poly1305(self._key)

    def __repr__(self) -> str:
        return f"<Sealer {self.cipher} seals={self.seals}>"

    def _next_nonce(self) -> bytes:
        if self._counter >= NONCE_LIMIT:
            raise SealerExhausted("nonce counter exhausted; reboot for a fresh key")
        nonce = _NONCE.pack(self._counter)
        self._counter += 1
        return nonce

    def seal(self, binding: Binding, plaintext: bytes) -> bytes:
        """``nonce || ciphertext || tag`` for ``plaintext`` bound to ``binding``."""
        if len(plaintext) != self.page_size:
            raise ValueError(f"page is {len(plaintext)} bytes, expected {self.page_size}")
        ad = binding.associated_data()
        nonce = self._next_nonce()
        self.seals += 1
        if self._aead is None:
            return nonce + plaintext + self._null_tag(ad, plaintext)
        return nonce + self._aead.encrypt(nonce, plaintext, ad)

    def unseal(self, binding: Binding, blob: bytes) -> bytes:
        """The plaintext, only if ``blob`` is exactly what this sealer sealed for
        ``binding``; otherwise :class:`SealError`."""
        if len(blob) != self.blob_len:
            raise SealError(f"sealed page is {len(blob)} bytes, expected {self.blob_len}")
        ad = binding.associated_data()
        nonce, body = blob[:NONCE_LEN], blob[NONCE_LEN:]
        if self._aead is None:
            plaintext, tag = body[:-TAG_LEN], body[-TAG_LEN:]
            if not hmac.compare_digest(tag, self._null_tag(ad, plaintext)):
                raise SealError("integrity check failed")
            return plaintext
        try:
            return self._aead.decrypt(nonce, body, ad)
        except InvalidTag:
            raise SealError("integrity check failed") from None

    def _null_tag(self, ad: bytes, plaintext: bytes) -> bytes:
        """INSECURE "null" cipher: no confidentiality at all (benchmark baseline only);
        a keyed BLAKE2b tag still refuses tampering and misplaced pages."""
        return hashlib.blake2b(ad + plaintext, key=self._key, digest_size=TAG_LEN).digest()

    def seal_many(self, items: Sequence[tuple[Binding, bytes]]) -> list[bytes]:
        return [self.seal(b, p) for b, p in items]

    def unseal_many(self, items: Sequence[tuple[Binding, bytes]]) -> list[bytes | SealError]:
        out: list[bytes | SealError] = []
        for binding, blob in items:
            try:
                out.append(self.unseal(binding, blob))
            except SealError as exc:
                out.append(exc)
        return out
