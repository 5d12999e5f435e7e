"""A store batch's slots: ``SwapLayout.reserve``/``commit``/``cancel`` place pages exactly
as the one-slot-at-a-time steps (``take``/``bind``/``put``/``release``) always did; a
fetch's ``find`` is ``locate`` of the handle's slot; ``join_sealed`` rebuilds the blob
the metadata entry and the ciphertext came from, as a copy; a batch naming a handle
twice keeps its last copy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern._pagefmt import META_LEN, NONCE_LEN, TAG_LEN, join_blob
from capkern.servers.pager._layout import (
    NoSpace,
    Plan,
    SwapLayout,
    join_sealed,
    pack_meta_entry,
    unpack_meta_entry,
)
from capkern.servers.pager._server import _last_copies


def _reference_plan(lay: SwapLayout, handles: list[int]) -> Plan:
    """The store's original planning: new pages first, one ``take`` each."""
    plan: Plan = {}
    for handle in sorted(handles, key=lambda h: lay.lookup(h) is not None):
        old = lay.lookup(handle)
        try:
            plan[handle] = (lay.take(), old)
        except NoSpace:
            if old is not None:
                plan[handle] = (old, old)
    return plan


def _reference_commit(lay: SwapLayout, plan: Plan) -> None:
    for handle, (slot, _old) in plan.items():
        previous = lay.bind(handle, slot)
        if previous is not None:
            lay.put(previous)


def _reference_cancel(lay: SwapLayout, plan: Plan) -> None:
    for handle, (slot, old) in plan.items():
        if slot != old:
            lay.put(slot)
        else:
            lay.release(handle)


def _state(lay: SwapLayout) -> tuple[object, ...]:
    return ([(h, lay.lookup(h)) for h in lay.handles()], sorted(lay._free), lay.used)


batches = st.lists(
    st.tuples(st.lists(st.integers(0, 20), max_size=8, unique=True), st.booleans(),
              st.lists(st.integers(0, 20), max_size=3)),
    max_size=25)


@given(script=batches, nblocks=st.integers(2, 12))
def test_batch_slots_agree_with_the_one_at_a_time_steps(
        script: list[tuple[list[int], bool, list[int]]], nblocks: int) -> None:
    new, old = SwapLayout(nblocks, 4096), SwapLayout(nblocks, 4096)
    for handles, write_ok, released in script:
        plan = new.reserve(handles)
        assert plan == _reference_plan(old, handles)
        assert list(plan) == list(_reference_plan_order(old, handles, plan))
        if write_ok:
            new.commit(plan)
            _reference_commit(old, plan)
        else:
            new.cancel(plan)
            _reference_cancel(old, plan)
        for handle in released:
            new.release(handle)
            old.release(handle)
        assert _state(new) == _state(old)
        slots = [new.lookup(h) for h in new.handles()]
        assert len(set(slots)) == len(slots)  # no slot holds two pages
        assert set(slots).isdisjoint(new._free)  # and a bound slot is never free


def _reference_plan_order(lay: SwapLayout, handles: list[int], plan: Plan) -> list[int]:
    """New pages first, then rewrites, each group in batch order (what ``sorted`` gave)."""
    return [h for h in sorted(handles, key=lambda h: lay.lookup(h) is not None) if h in plan]


def test_reserve_when_full_rewrites_held_pages_in_place_and_leaves_new_ones_out() -> None:
    lay = SwapLayout(4, 4096)  # 1 metadata block + 3 slots
    lay.commit(lay.reserve([1, 2, 3]))
    assert lay.reserve([9, 2]) == {2: (2 - 1, 2 - 1)}  # handle 2 holds slot 1
    assert lay.used == 3 and not lay._free


def test_cancel_drops_a_page_rewritten_in_place_and_frees_new_slots() -> None:
    lay = SwapLayout(5, 4096)  # 4 slots
    lay.commit(lay.reserve([1, 2, 3]))
    plan = lay.reserve([4, 1])  # 4 takes slot 3; 1 finds no free slot: in place
    assert plan == {4: (3, None), 1: (0, 0)}
    lay.cancel(plan)
    assert lay.lookup(4) is None and lay.lookup(1) is None
    assert sorted(lay._free) == [0, 3] and lay.lookup(2) == 1


@given(nblocks=st.integers(2, 3000), block_size=st.integers(META_LEN, 600),
       handle=st.integers(0, (1 << 63) - 1))
def test_find_is_locate_of_the_handles_slot(nblocks: int, block_size: int,
                                            handle: int) -> None:
    lay = SwapLayout(nblocks, block_size)
    assert lay.find(handle) is None
    for h in range(min(lay.slots - 1, 5)):
        lay.allocate(h + (1 << 40))
    slot = lay.allocate(handle)
    assert lay.find(handle) == lay.locate(slot)
    lay.release(handle)
    assert lay.find(handle) is None


@given(nonce=st.binary(min_size=NONCE_LEN, max_size=NONCE_LEN),
       tag=st.binary(min_size=TAG_LEN, max_size=TAG_LEN),
       ciphertext=st.binary(max_size=64), index=st.integers(0, 9))
def test_join_sealed_is_the_blob_of_the_entry_and_ciphertext(
        nonce: bytes, tag: bytes, ciphertext: bytes, index: int) -> None:
    block = bytearray(10 * META_LEN)
    off = index * META_LEN
    block[off : off + META_LEN] = pack_meta_entry(nonce, tag)
    got = join_sealed(block, off, ciphertext)
    stored_nonce, stored_tag = unpack_meta_entry(block, off)
    assert got == join_blob(stored_nonce, ciphertext, stored_tag)
    assert got == nonce + ciphertext + tag and type(got) is bytes
    block[off : off + META_LEN] = bytes(META_LEN)  # the pager rewrites the block later
    assert got == nonce + ciphertext + tag


@pytest.mark.parametrize("offset", [-1, 100 - META_LEN + 1, 100])
def test_join_sealed_refuses_an_entry_outside_the_block(offset: int) -> None:
    with pytest.raises(ValueError):
        join_sealed(bytes(100), offset, b"c")


@given(items=st.lists(st.tuples(st.integers(0, 6), st.binary(max_size=2)), max_size=10))
def test_a_batch_keeps_each_handles_last_copy_in_its_position(
        items: list[tuple[int, bytes]]) -> None:
    expected: dict[int, bytes] = {}
    for handle, blob in items:
        expected.pop(handle, None)
        expected[handle] = blob
    got = _last_copies([list(item) for item in items])
    assert list(got.items()) == list(expected.items())


def test_a_batch_that_is_no_list_of_pairs_is_refused_as_before() -> None:
    assert _last_copies([]) == {}
    for bad in ({1: b"x", 2: b"y"}, [[1, b"x", b"extra"]], [7]):
        with pytest.raises((TypeError, ValueError)):
            _last_copies(bad)  # type: ignore[arg-type]
