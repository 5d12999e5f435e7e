"""The sealer's per-page path without Binding objects: ``associated_data`` is exactly what a
``Binding`` encodes, ``seal_ad``/``unseal_ad`` interoperate with ``seal``/``unseal``, and
the sealer's server (driven directly, sans kernel) still refuses per page with ok=0 and
no plaintext."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern._pagefmt import PAGE_SIZE
from capkern.servers.crypt import CIPHERS, Binding, Sealer, SealError
from capkern.servers.crypt._sealer import associated_data
from capkern.servers.crypt._server import CryptServer

BOOT = os.urandom(16)
U64 = st.integers(0, (1 << 64) - 1)


def _run(coro: Any) -> Any:
    """Drive a handler that never waits (the sealer's never do) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the handler waited")


@given(asid=st.integers(0, (1 << 32) - 1), inc=U64, vpn=U64, version=U64)
def test_associated_data_is_what_a_binding_encodes(asid: int, inc: int, vpn: int,
                                                   version: int) -> None:
    assert associated_data(BOOT, asid, inc, vpn, version) == \
        Binding(BOOT, asid, inc, vpn, version).associated_data()


@pytest.mark.parametrize("fields", [(b"short", 1, 1, 1, 1), (BOOT, -1, 1, 1, 1),
                                    (BOOT, 1 << 32, 1, 1, 1), (BOOT, 1, 1 << 64, 1, 1),
                                    (BOOT, 1, 1, -1, 1), (BOOT, 1, 1, 1, 1 << 64),
                                    (BOOT, 1.5, 1, 1, 1)])
def test_a_bad_field_is_a_value_error(fields: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        associated_data(*fields)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_ad_forms_interoperate_and_bind(cipher: str) -> None:
    s = Sealer(cipher)
    page = os.urandom(PAGE_SIZE)
    binding = Binding(BOOT, 3, 1, 77, 5)
    ad = binding.associated_data()
    assert s.unseal_ad(ad, s.seal(binding, page)) == page
    assert s.unseal(binding, s.seal_ad(ad, page)) == page
    other = associated_data(BOOT, 3, 1, 77, 6)  # a newer version of the same place
    with pytest.raises(SealError):
        s.unseal_ad(other, s.seal_ad(ad, page))
    with pytest.raises(SealError):
        s.unseal_ad(ad, b"junk")
    with pytest.raises(ValueError):
        s.seal_ad(ad, page[:-1])
    assert s.seals == 3  # a refused seal consumes no nonce


@pytest.mark.parametrize("cipher", CIPHERS)
def test_server_unseals_per_page_and_counts_refusals(cipher: str) -> None:
    server = CryptServer(cipher, BOOT)
    pages = [os.urandom(PAGE_SIZE) for _ in range(3)]
    places = [[1, 0, v, 2] for v in range(3)]
    blobs = _run(server.on_seal({"pages": [[p, d] for p, d in zip(places, pages,
                                                                  strict=True)]}))["blobs"]
    tampered = blobs[1][:-1] + bytes([blobs[1][-1] ^ 1])
    items = [[places[0], blobs[0]], [places[1], tampered], [places[0], blobs[2]],
             [places[2], blobs[2]], [[1, 0, 2, 3], blobs[2]]]
    got = _run(server.on_unseal({"pages": items}))
    assert got == {"plain": [pages[0], b"", b"", pages[2], b""], "ok": [1, 0, 0, 1, 0]}
    assert (server.unseals, server.refused) == (5, 3)
    stats = _run(server.on_stats({}))
    assert stats == {"cipher": cipher, "seals": 3, "unseals": 5, "refused": 3}
