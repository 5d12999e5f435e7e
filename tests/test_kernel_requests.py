"""Requests the kernel builds itself are cheap but still bounded: encode_trusted keeps
the size limit and refuses what msgpack cannot carry; the contract's check of big
integer lists is fast and as strict as before (bools, out-of-range and non-ints fail,
naming the index)."""

from __future__ import annotations

import pytest

from capkern import _wire as wire
from capkern._contract import Int, ListOf
from capkern.errors import ContractViolation, MessageTooLarge, UnencodableBody


def test_encode_trusted_round_trips_and_keeps_the_size_limit() -> None:
    limits = wire.Limits()
    body = {"n": 3, "mapped": list(range(1000)), "pages": [[[1, 2, 3, 4], b"x" * 4096]]}
    assert wire.decode(wire.encode_trusted(body, limits)) == body
    with pytest.raises(MessageTooLarge):
        wire.encode_trusted(b"x" * (limits.max_body_bytes + 1), limits)
    with pytest.raises(UnencodableBody):
        wire.encode_trusted({"x": object()}, limits)


class _MyInt(int):
    pass


@pytest.mark.parametrize("bad, index", [([1, 2, True], 2), ([0, -1], 1), ([1 << 63], 0),
                                        ([1, "2"], 1), ([1.0], 0), ([None], 0)])
def test_int_lists_refuse_every_bad_item_by_index(bad: list[object], index: int) -> None:
    spec = ListOf(Int(0, (1 << 63) - 1), 1 << 16)
    with pytest.raises(ContractViolation, match=rf"x\[{index}\]"):
        spec.check(bad, "x")


def test_int_lists_accept_good_items_and_int_subclasses() -> None:
    spec = ListOf(Int(0, 10), 100)
    spec.check(list(range(11)), "x")
    spec.check([_MyInt(3)], "x")
    ListOf(Int(), 10).check([-(1 << 70), 1 << 70], "x")  # unbounded ends
    with pytest.raises(ContractViolation):
        ListOf(Int(0, 1), 2).check([0, 1, 0], "x")  # the length bound still holds
