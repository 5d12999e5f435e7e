"""Swap layout: slot allocation, and metadata/data placement that never overlaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern._pagefmt import META_LEN, NONCE_LEN, TAG_LEN
from capkern.servers.pager._layout import (
    NoSpace,
    SwapLayout,
    pack_meta_entry,
    unpack_meta_entry,
)


def test_allocate_until_full_then_release_and_reuse() -> None:
    lay = SwapLayout(10, 4096)
    assert lay.meta_blocks == 1 and lay.slots == 9
    slots = [lay.allocate(h) for h in range(100, 100 + lay.slots)]
    assert sorted(slots) == list(range(lay.slots)) and lay.used == lay.slots
    with pytest.raises(NoSpace):
        lay.allocate(999)
    assert lay.allocate(103) == slots[3]  # existing handle keeps its slot even when full
    lay.release(103)
    lay.release(12345)  # unknown: ignored
    assert lay.lookup(103) is None and lay.used == lay.slots - 1
    assert lay.allocate(999) == slots[3]
    assert lay.lookup(999) == slots[3]
    assert 103 not in lay.handles() and 999 in lay.handles()


def test_lowest_free_slot_first() -> None:
    lay = SwapLayout(20, 4096)
    for h in range(5):
        lay.allocate(h)
    lay.release(3)
    lay.release(1)
    assert lay.allocate(50) == 1 and lay.allocate(51) == 3 and lay.allocate(52) == 5


@given(nblocks=st.integers(2, 3000), block_size=st.integers(META_LEN, 600))
def test_regions_cover_and_never_overlap(nblocks: int, block_size: int) -> None:
    lay = SwapLayout(nblocks, block_size)
    per = block_size // META_LEN
    assert lay.meta_blocks * per >= lay.slots  # metadata covers every slot
    assert lay.meta_blocks + lay.slots <= nblocks
    # maximal: one more slot would not fit
    assert (lay.slots + 1) + -(-(lay.slots + 1) // per) > nblocks
    data = {lay.data_lba(s) for s in range(lay.slots)}
    assert len(data) == lay.slots
    assert all(lay.meta_blocks <= lba < nblocks for lba in data)
    entries = {(lay.meta_lba(s), lay.meta_offset(s)) for s in range(lay.slots)}
    assert len(entries) == lay.slots
    for lba, off in entries:
        assert 0 <= lba < lay.meta_blocks
        assert off >= 0 and off + META_LEN <= block_size


def test_slot_out_of_range() -> None:
    lay = SwapLayout(10, 4096)
    for bad in (-1, lay.slots):
        for fn in (lay.data_lba, lay.meta_lba, lay.meta_offset):
            with pytest.raises(ValueError):
                fn(bad)


@pytest.mark.parametrize(("nblocks", "block_size"), [(1, 4096), (0, 4096), (10, META_LEN - 1)])
def test_bad_geometry(nblocks: int, block_size: int) -> None:
    with pytest.raises(ValueError):
        SwapLayout(nblocks, block_size)


@given(
    nonce=st.binary(min_size=NONCE_LEN, max_size=NONCE_LEN),
    tag=st.binary(min_size=TAG_LEN, max_size=TAG_LEN),
    slot=st.integers(0, 4096 // META_LEN - 1),
)
def test_meta_entry_round_trip(nonce: bytes, tag: bytes, slot: int) -> None:
    entry = pack_meta_entry(nonce, tag)
    assert len(entry) == META_LEN
    block = bytearray(b"\xaa" * 4096)
    off = slot * META_LEN
    block[off : off + META_LEN] = entry
    assert unpack_meta_entry(bytes(block), off) == (nonce, tag)


def test_meta_entry_length_checks() -> None:
    with pytest.raises(ValueError):
        pack_meta_entry(b"n" * (NONCE_LEN - 1), b"t" * TAG_LEN)
    with pytest.raises(ValueError):
        pack_meta_entry(b"n" * NONCE_LEN, b"t" * (TAG_LEN + 1))
    with pytest.raises(ValueError):
        unpack_meta_entry(bytes(100), 100 - META_LEN + 1)
    with pytest.raises(ValueError):
        unpack_meta_entry(bytes(100), -1)


layout_ops = st.lists(
    st.tuples(st.sampled_from(["allocate", "release"]), st.integers(0, 30)), max_size=80
)


def _run(script: list[tuple[str, int]]) -> list[object]:
    """Apply ``script`` to a fresh small layout; record every result and the final map."""
    lay = SwapLayout(12, 4096)
    out: list[object] = []
    for kind, handle in script:
        if kind == "release":
            lay.release(handle)
            continue
        try:
            out.append(lay.allocate(handle))
        except NoSpace:
            out.append("full")
    out.append([(h, lay.lookup(h)) for h in lay.handles()])
    return out


@given(script=layout_ops)
def test_placement_is_deterministic_and_slots_unshared(script: list[tuple[str, int]]) -> None:
    assert _run(script) == _run(script)
    lay = SwapLayout(12, 4096)
    for kind, handle in script:
        if kind == "release":
            lay.release(handle)
        elif lay.used < lay.slots or lay.lookup(handle) is not None:
            lay.allocate(handle)
    slots = [lay.lookup(h) for h in lay.handles()]
    assert len(set(slots)) == len(slots) == lay.used <= lay.slots
