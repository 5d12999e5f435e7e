"""How the pager lays a store batch out on its device (``Pager._stage``): each page's
ciphertext in its slot's data block, its nonce and tag packed into the metadata block,
exactly as ``split_blob``/``locate``/``join_sealed`` define them; a blob of the wrong
size or a slot out of range is refused with their ValueError, never written."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest

from capkern._pagefmt import NONCE_LEN, SEALED_LEN, TAG_LEN, split_blob
from capkern.servers.pager._layout import SwapLayout, join_sealed
from capkern.servers.pager._policy import make_policy
from capkern.servers.pager._server import Pager


def _pager() -> tuple[Pager, SwapLayout]:
    pager = Pager(cast(Any, None), make_policy("clock"))
    pager.block_size = 4096
    layout = SwapLayout(400)
    return pager, layout


def test_stage_places_ciphertext_and_meta_as_the_layout_says() -> None:
    pager, layout = _pager()
    pages = {h: os.urandom(SEALED_LEN) for h in (7, 3, 200, 9)}
    plan = layout.reserve(pages)
    writes, staged = pager._stage(layout, list(pages), pages, plan)
    blocks = dict((lba, data) for lba, data in writes)
    assert len(blocks) == len(writes)  # no block written twice
    for h, blob in pages.items():
        data_lba, meta_lba, off = layout.locate(plan[h][0])
        nonce, ciphertext, tag = split_blob(blob)
        assert blocks[data_lba] == ciphertext
        assert blocks[meta_lba] == bytes(staged[meta_lba])
        assert join_sealed(staged[meta_lba], off, ciphertext) == blob
        assert staged[meta_lba][off : off + NONCE_LEN + TAG_LEN] == nonce + tag


@pytest.mark.parametrize("size", [0, SEALED_LEN - 1, SEALED_LEN + 1])
def test_stage_refuses_a_blob_of_the_wrong_size(size: int) -> None:
    pager, layout = _pager()
    pages = {1: os.urandom(SEALED_LEN), 2: os.urandom(size)}
    plan = layout.reserve(pages)
    with pytest.raises(ValueError, match="sealed page is"):
        pager._stage(layout, list(pages), pages, plan)


@pytest.mark.parametrize("slot", [-1, 10**6])
def test_stage_refuses_a_slot_outside_the_layout(slot: int) -> None:
    pager, layout = _pager()
    pages = {1: os.urandom(SEALED_LEN)}
    with pytest.raises(ValueError, match="outside"):
        pager._stage(layout, [1], pages, {1: (slot, None)})
