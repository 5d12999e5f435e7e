"""The public layout of a sealed page (no secrets here; sans-IO).

A sealed page, as the kernel hands it to the untrusted pager, is one opaque blob::

    nonce (12 bytes) || ciphertext (PAGE_SIZE bytes) || tag (16 bytes)

The pager may store the parts wherever it likes (a whole block for the ciphertext and
packed nonce/tag metadata is the tidy way); it learns nothing from them.  The binding of
a blob to its place (boot, address space, incarnation, virtual page, version) lives in
the AEAD's associated data, which is never stored: the kernel recomputes it.
"""

from __future__ import annotations

PAGE_SIZE = 4096
NONCE_LEN = 12
TAG_LEN = 16
META_LEN = NONCE_LEN + TAG_LEN
SEALED_LEN = NONCE_LEN + PAGE_SIZE + TAG_LEN


def split_blob(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """``blob`` -> ``(nonce, ciphertext, tag)``.  Raises ValueError on a wrong length."""
    if len(blob) != SEALED_LEN:
        raise ValueError(f"sealed page is {len(blob)} bytes, expected {SEALED_LEN}")
    return blob[:NONCE_LEN], blob[NONCE_LEN:-TAG_LEN], blob[-TAG_LEN:]


def join_blob(nonce: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """Inverse of :func:`split_blob` (no length checks: the kernel checks on unseal)."""
    return nonce + ciphertext + tag
