"""The trusted sealer (sans-IO): AEAD round trips, refusal of every tampering, binding."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capkern._pagefmt import NONCE_LEN, PAGE_SIZE, SEALED_LEN, TAG_LEN, split_blob
from capkern.servers.crypt import CIPHERS, Binding, Sealer, SealerExhausted, SealError, _sealer

AEADS = ["aes-256-gcm", "chacha20-poly1305"]
BOOT = os.urandom(16)
B = Binding(BOOT, 3, 1, 77, 5)
PAGE = os.urandom(PAGE_SIZE)


def _flip(blob: bytes, bit: int) -> bytes:
    bad = bytearray(blob)
    bad[bit // 8] ^= 1 << (bit % 8)
    return bytes(bad)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip(cipher: str) -> None:
    s = Sealer(cipher)
    pages = [PAGE, bytes(PAGE_SIZE), b"\xff" * PAGE_SIZE]
    blobs = [s.seal(B, p) for p in pages]
    assert all(len(b) == SEALED_LEN for b in blobs)
    assert [s.unseal(B, b) for b in blobs] == pages
    assert s.seals == 3


def test_other_page_size() -> None:
    s = Sealer(page_size=512)
    page = os.urandom(512)
    blob = s.seal(B, page)
    assert len(blob) == NONCE_LEN + 512 + TAG_LEN
    assert s.unseal(B, blob) == page
    with pytest.raises(ValueError):
        s.seal(B, PAGE)


@pytest.mark.parametrize("cipher", AEADS)
def test_no_plaintext_window_in_blob(cipher: str) -> None:
    blob = Sealer(cipher).seal(B, PAGE)
    _, body, _ = split_blob(blob)
    assert body != PAGE
    # no 16-byte window of the plaintext, at ANY offset, appears anywhere in the blob
    windows = {PAGE[i : i + 16] for i in range(PAGE_SIZE - 15)}
    assert not any(blob[j : j + 16] in windows for j in range(len(blob) - 15))


def test_null_cipher_is_cleartext_but_authenticated() -> None:
    s = Sealer("null")
    blob = s.seal(B, PAGE)
    nonce, body, _ = split_blob(blob)
    assert nonce == bytes(NONCE_LEN) and body == PAGE  # no confidentiality: documented
    with pytest.raises(SealError):
        s.unseal(B, _flip(blob, 8 * 20))
    with pytest.raises(SealError):
        s.unseal(B, _flip(blob, 3))  # a non-zero nonce is refused too


_SEALERS = {c: Sealer(c) for c in CIPHERS}
_BLOBS = {c: s.seal(B, PAGE) for c, s in _SEALERS.items()}


@pytest.mark.parametrize("cipher", CIPHERS)
@settings(max_examples=150, deadline=None)
@given(bit=st.integers(0, SEALED_LEN * 8 - 1))
def test_any_single_bit_flip_refused(cipher: str, bit: int) -> None:
    with pytest.raises(SealError):
        _SEALERS[cipher].unseal(B, _flip(_BLOBS[cipher], bit))


@pytest.mark.parametrize("cipher", CIPHERS)
def test_bit_flips_in_every_region_refused(cipher: str) -> None:
    rng = random.Random(1234)
    nonce_bits = list(range(NONCE_LEN * 8))  # every nonce bit
    tag_bits = list(range((SEALED_LEN - TAG_LEN) * 8, SEALED_LEN * 8))  # every tag bit
    body_bits = rng.sample(range(NONCE_LEN * 8, (SEALED_LEN - TAG_LEN) * 8), 200)
    body_bits += [NONCE_LEN * 8, (SEALED_LEN - TAG_LEN) * 8 - 1]  # body edges
    s, blob = _SEALERS[cipher], _BLOBS[cipher]
    for bit in nonce_bits + body_bits + tag_bits:
        with pytest.raises(SealError):
            s.unseal(B, _flip(blob, bit))
    assert s.unseal(B, blob) == PAGE  # the untouched blob still opens


@pytest.mark.parametrize("cipher", CIPHERS)
def test_truncation_and_extension_refused(cipher: str) -> None:
    s = Sealer(cipher)
    blob = s.seal(B, PAGE)
    for bad in (blob[:-1], blob[:-TAG_LEN], blob + b"\0", b"", blob[1:], blob * 2, b"\0" + blob):
        with pytest.raises(SealError):
            s.unseal(B, bad)


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("field", ["boot", "asid", "incarnation", "vpn", "version"])
def test_every_binding_field_is_bound(cipher: str, field: str) -> None:
    s = Sealer(cipher)
    blob = s.seal(B, PAGE)
    values = {"boot": os.urandom(16), "asid": 4, "incarnation": 2, "vpn": 78, "version": 6}
    other = Binding(**{**{f: getattr(B, f) for f in values}, field: values[field]})
    assert other.associated_data() != B.associated_data()
    with pytest.raises(SealError):
        s.unseal(other, blob)
    assert s.unseal(B, blob) == PAGE


@pytest.mark.parametrize("cipher", CIPHERS)
def test_older_version_refused_under_newer_binding(cipher: str) -> None:
    s = Sealer(cipher)
    v1, v2 = Binding(BOOT, 1, 0, 9, 1), Binding(BOOT, 1, 0, 9, 2)
    old = s.seal(v1, PAGE)
    new_page = os.urandom(PAGE_SIZE)
    new = s.seal(v2, new_page)
    with pytest.raises(SealError):
        s.unseal(v2, old)  # replay of the old copy for the current version
    assert s.unseal(v2, new) == new_page


@pytest.mark.parametrize("cipher", CIPHERS)
def test_blob_from_another_boot_refused(cipher: str) -> None:
    blob = Sealer(cipher).seal(B, PAGE)
    with pytest.raises(SealError):
        Sealer(cipher).unseal(B, blob)  # a fresh sealer = a fresh boot key


def test_nonces_are_counter_and_never_repeat() -> None:
    s = Sealer()
    nonces = [s.seal(B, PAGE)[:NONCE_LEN] for _ in range(1000)]
    assert len(set(nonces)) == 1000
    assert nonces[0] == bytes(12) and nonces[1] == bytes(11) + b"\x01"
    assert nonces[999] == bytes(4) + (999).to_bytes(8, "big")


def test_seal_many_and_unseal_many_per_item() -> None:
    s = Sealer()
    other = Binding(BOOT, 3, 1, 78, 5)
    good, good2 = s.seal_many([(B, PAGE), (other, PAGE)])
    assert good[:NONCE_LEN] != good2[:NONCE_LEN]
    out = s.unseal_many(
        [(B, good), (B, good[:-1]), (other, good), (other, good2), (B, _flip(good, 100))]
    )
    assert out[0] == PAGE and out[3] == PAGE
    assert all(isinstance(r, SealError) for r in (out[1], out[2], out[4]))
    assert s.unseal_many([]) == [] and s.seal_many([]) == []


def test_exhaustion_stops_sealing() -> None:
    s = Sealer()
    s._counter = _sealer.NONCE_LIMIT - 1
    blob = s.seal(B, PAGE)
    assert blob[:NONCE_LEN] == bytes(4) + (_sealer.NONCE_LIMIT - 1).to_bytes(8, "big")
    with pytest.raises(SealerExhausted):
        s.seal(B, PAGE)
    with pytest.raises(SealerExhausted):
        s.seal_many([(B, PAGE)])
    assert s._counter == _sealer.NONCE_LIMIT  # the counter never passes the limit
    assert s.unseal(B, blob) == PAGE  # unsealing still works


@pytest.mark.parametrize("cipher", CIPHERS)
def test_repr_and_errors_do_not_leak(cipher: str) -> None:
    s = Sealer(cipher)
    key = s._key
    text = repr(s) + str(s)
    assert key.hex() not in text and repr(key) not in text and cipher in text
    assert not [a for a in dir(s) if "key" in a.lower() and not a.startswith("_")]
    blob = s.seal(B, PAGE)
    with pytest.raises(SealError) as info:
        s.unseal(B, _flip(blob, 8 * 100))
    msg = str(info.value) + repr(info.value)
    assert key.hex() not in msg and PAGE[:16].hex() not in msg and repr(PAGE[:16]) not in msg


def test_bad_inputs() -> None:
    s = Sealer()
    for bad in (b"short", PAGE + b"x", b""):
        with pytest.raises(ValueError):
            s.seal(B, bad)
    assert s.seals == 0  # a refused seal consumes no nonce
    with pytest.raises(ValueError):
        Sealer("rot13")
    with pytest.raises(SealError):
        s.unseal(B, None)  # type: ignore[arg-type]
    for binding in (
        Binding(b"short", 1, 1, 1, 1),
        Binding(BOOT, -1, 1, 1, 1),
        Binding(BOOT, 2**32, 1, 1, 1),
        Binding(BOOT, 1, 2**64, 1, 1),
        Binding(BOOT, 1, 1, -1, 1),
        Binding(BOOT, 1, 1, 1, 2**64),
    ):
        with pytest.raises(ValueError):
            binding.associated_data()
        with pytest.raises(ValueError):
            s.seal(binding, PAGE)


def test_associated_data_layout() -> None:
    ad = Binding(b"B" * 16, 1, 2, 3, 4).associated_data()
    assert ad.startswith(b"capkern.page.v1\0" + b"B" * 16)
    assert len(ad) == 16 + 16 + 4 + 8 + 8 + 8
    top = Binding(b"B" * 16, 2**32 - 1, 2**64 - 1, 2**64 - 1, 2**64 - 1).associated_data()
    assert len(top) == len(ad)
