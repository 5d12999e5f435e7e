"""``SwapLayout.locate``: a slot's data block and metadata entry in one checked step
(what a fetch uses), the same as the three separate lookups; and a metadata entry read
straight out of a mutable block is a copy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern._pagefmt import META_LEN, NONCE_LEN, TAG_LEN
from capkern.servers.pager._layout import SwapLayout, pack_meta_entry, unpack_meta_entry


@given(nblocks=st.integers(2, 3000), block_size=st.integers(META_LEN, 600), data=st.data())
def test_locate_agrees_with_the_separate_lookups(nblocks: int, block_size: int,
                                                  data: st.DataObject) -> None:
    lay = SwapLayout(nblocks, block_size)
    slot = data.draw(st.integers(0, lay.slots - 1))
    assert lay.locate(slot) == (lay.data_lba(slot), lay.meta_lba(slot), lay.meta_offset(slot))


@pytest.mark.parametrize("bad", [-1, 9, 10**6])
def test_locate_refuses_a_slot_out_of_range(bad: int) -> None:
    lay = SwapLayout(10, 4096)
    assert lay.slots == 9
    with pytest.raises(ValueError):
        lay.locate(bad)


def test_entry_from_a_bytearray_is_a_copy() -> None:
    block = bytearray(4096)
    nonce, tag = b"n" * NONCE_LEN, b"t" * TAG_LEN
    block[META_LEN : 2 * META_LEN] = pack_meta_entry(nonce, tag)
    got = unpack_meta_entry(block, META_LEN)
    block[META_LEN : 2 * META_LEN] = bytes(META_LEN)  # the pager rewrites the block later
    assert got == (nonce, tag) and all(type(x) is bytes for x in got)
