"""The trusted sealer (sans-IO): AEAD round trips, refusal of every tampering, binding."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capkern.pagefmt import PAGE_SIZE, SEALED_LEN
from capkern.servers.crypt import Binding, Sealer, SealerExhausted, SealError, _sealer

BOOT = os.urandom(16)
B = Binding(BOOT, 3, 1, 77, 5)
PAGE = os.urandom(PAGE_SIZE)
CIPHERS = ["aes-256-gcm", "chacha20-poly1305", "null"]


@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip(cipher: str) -> None:
    s = Sealer(cipher)
    blob = s.seal(B, PAGE)
    assert len(blob) == SEALED_LEN
    assert s.unseal(B, blob) == PAGE


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
def test_no_plaintext_window_in_blob(cipher: str) -> None:
    blob = Sealer(cipher).seal(B, PAGE)
    assert not any(PAGE[i : i + 16] in blob for i in range(0, PAGE_SIZE - 16, 16))


_AEAD = Sealer("aes-256-gcm")
_BLOB = _AEAD.seal(B, PAGE)


@settings(max_examples=300, derandomize=True)
@given(st.integers(0, SEALED_LEN * 8 - 1))
def test_any_single_bit_flip_refused(bit: int) -> None:
    bad = bytearray(_BLOB)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError):
        _AEAD.unseal(B, bytes(bad))


@pytest.mark.parametrize("cipher", CIPHERS)
def test_truncation_and_extension_refused(cipher: str) -> None:
    s = Sealer(cipher)
    blob = s.seal(B, PAGE)
    for bad in (blob[:-1], blob + b"\0", b"", blob[1:], blob * 2):
        with pytest.raises(SealError):
            s.unseal(B, bad)


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("field", ["boot", "asid", "incarnation", "vpn", "version"])
def test_every_binding_field_is_bound(cipher: str, field: str) -> None:
    s = Sealer(cipher)
    blob = s.seal(B, PAGE)
    values = {"boot": os.urandom(16), "asid": 4, "incarnation": 2, "vpn": 78, "version": 6}
    other = Binding(**{**{f: getattr(B, f) for f in values}, field: values[field]})
    with pytest.raises(SealError):
        s.unseal(other, blob)


def test_older_version_refused_under_newer_binding() -> None:
    s = Sealer()
    old = s.seal(Binding(BOOT, 1, 0, 9, 1), PAGE)
    s.seal(Binding(BOOT, 1, 0, 9, 2), os.urandom(PAGE_SIZE))
    with pytest.raises(SealError):
        s.unseal(Binding(BOOT, 1, 0, 9, 2), old)


def test_blob_from_another_boot_refused() -> None:
    blob = Sealer().seal(B, PAGE)
    with pytest.raises(SealError):
        Sealer().unseal(B, blob)  # a fresh sealer = a fresh boot key


def test_nonces_never_repeat() -> None:
    s = Sealer()
    nonces = {s.seal(B, PAGE)[:12] for _ in range(500)}
    assert len(nonces) == 500


def test_unseal_many_reports_per_item() -> None:
    s = Sealer()
    good = s.seal(B, PAGE)
    out = s.unseal_many([(B, good), (B, good[:-1]), (B, good)])
    assert out[0] == PAGE and isinstance(out[1], SealError) and out[2] == PAGE
    assert s.seal_many([(B, PAGE)] * 3)[0] != s.seal_many([(B, PAGE)])[0]


def test_exhaustion_stops_sealing() -> None:
    s = Sealer()
    s._counter = _sealer.NONCE_LIMIT - 1
    s.seal(B, PAGE)
    with pytest.raises(SealerExhausted):
        s.seal(B, PAGE)


def test_repr_does_not_leak_key_and_bad_inputs() -> None:
    s = Sealer()
    assert s._key.hex() not in repr(s) and s._key not in repr(s).encode()
    with pytest.raises(ValueError):
        s.seal(B, b"short")
    with pytest.raises(ValueError):
        Sealer("rot13")
    with pytest.raises(ValueError):
        Binding(b"short", 1, 1, 1, 1).associated_data()
    with pytest.raises(ValueError):
        Binding(BOOT, -1, 1, 1, 1).associated_data()
