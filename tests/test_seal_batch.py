"""A batch of seals takes one pass with no Python call per page; a field that does not
encode sends the batch down the page-by-page path, with the same outcome as before:
the kernel's version counter fails that page alone, the sealer refuses the request with
associated_data's ValueError (and seals nothing)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern._cspace import Rights
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._aspace import PTE, AddressSpace
from capkern.mmu._binding import Versions
from capkern.servers.crypt._sealer import associated_data
from capkern.servers.crypt._server import CryptServer

BOOT = b"b" * 16
GOOD_SPACE = 1
BAD_SPACE = 1 << 64  # an incarnation past its field


def _victims(incarnations: list[int]) -> list[Any]:
    out = []
    for i, inc in enumerate(incarnations):
        space = AddressSpace(1, inc)
        out.append((i, space, 0x20 + i, PTE(Rights.READ | Rights.WRITE, space, 0x20 + i)))
    return out


@given(st.lists(st.booleans(), max_size=12))
def test_batch_equals_page_by_page(bad: list[bool]) -> None:
    incarnations = [BAD_SPACE if b else GOOD_SPACE for b in bad]
    batched, single = Versions(), Versions()
    kept, bindings, errors = batched.seal_batch(_victims(incarnations))
    expect_kept, expect_bindings, expect_errors = [], [], []
    for victim in _victims(incarnations):
        try:
            expect_bindings.append(single.next_seal(victim[1], victim[2], victim[3]))
        except Exception as exc:  # BindingError, as the checked path reports it
            expect_errors.append(str(exc))
            continue
        expect_kept.append(victim[0])
    assert [v[0] for v in kept] == expect_kept
    assert bindings == expect_bindings
    assert errors == expect_errors
    assert batched.last == single.last == len(expect_kept)
    assert [v[3].version for v in kept] == [b[3] for b in bindings]


async def test_sealer_batch_unseals_under_each_binding() -> None:
    server = CryptServer("aes-256-gcm", BOOT)
    places = [[1, 0, vpn, vpn + 1] for vpn in range(5)]
    pages = [bytes([vpn]) * PAGE_SIZE for vpn in range(5)]
    body = {"pages": [[p, d] for p, d in zip(places, pages, strict=True)]}
    blobs = (await server.on_seal(body))["blobs"]
    for place, page, blob in zip(places, pages, blobs, strict=True):
        assert server.sealer.unseal_ad(associated_data(BOOT, *place), blob) == page
    reply = await server.on_unseal({"pages": [[places[1], blobs[0]]]})  # misplaced copy
    assert reply["ok"] == [0]


@pytest.mark.parametrize("place", [[1, 0, 2, 1 << 64], [-1, 0, 2, 1], [1 << 32, 0, 2, 1],
                                   [1, 0, "2", 1]])
async def test_sealer_refuses_a_field_out_of_range_and_seals_nothing(place: list[Any]) -> None:
    server = CryptServer("aes-256-gcm", BOOT)
    body = {"pages": [[[1, 0, 1, 1], bytes(PAGE_SIZE)], [place, bytes(PAGE_SIZE)]]}
    with pytest.raises(ValueError, match="binding field out of range"):
        await server.on_seal(body)
    assert server.sealer.seals == 0


async def test_sealer_with_a_wrong_size_boot_id_refuses_to_seal() -> None:
    server = CryptServer("aes-256-gcm", b"short")
    with pytest.raises(ValueError, match="boot id must be 16 bytes"):
        await server.on_seal({"pages": [[[1, 0, 1, 1], bytes(PAGE_SIZE)]]})
