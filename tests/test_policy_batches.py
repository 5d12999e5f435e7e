"""A policy's batch operations: ``admit_many``/``remove_many`` do what ``admit``/``remove``
do page by page, for every policy (and for a user's policy that only wrote the single
ones); the clock's two-turn sweep chooses, and leaves the ring, exactly as the hand
moving one page at a time does."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern.servers.pager._policy import POLICIES, ClockPolicy, ReplacementPolicy, make_policy

NAMES = sorted(POLICIES)
handles = st.lists(st.integers(0, 40), max_size=30)


def _hand_by_hand(ring: OrderedDict[int, bool], n: int) -> list[int]:
    """The clock as first written: the hand moves one page a step, at most two turns."""
    victims: dict[int, None] = {}
    want = min(n, len(ring))
    for _ in range(2 * len(ring)):
        if len(victims) >= want:
            break
        h, bit = ring.popitem(last=False)
        ring[h] = False
        if not bit and h not in victims:
            victims[h] = None
    return list(victims)


script = st.lists(st.tuples(st.sampled_from(["admit", "remove", "ref", "choose"]), handles,
                            st.integers(-2, 45)), max_size=40)


@given(ops=script)
def test_clock_two_turns_agree_with_the_hand_moving_page_by_page(
        ops: list[tuple[str, list[int], int]]) -> None:
    clock = ClockPolicy()
    model: OrderedDict[int, bool] = OrderedDict()
    for kind, hs, n in ops:
        if kind == "admit":
            clock.admit_many(hs)
            for h in hs:
                model.setdefault(h, False)
        elif kind == "remove":
            clock.remove_many(hs)
            for h in hs:
                model.pop(h, None)
        elif kind == "ref":
            clock.referenced(hs)
            for h in hs:
                if h in model:
                    model[h] = True
        else:
            assert clock.choose(n) == _hand_by_hand(model, n)
        assert list(clock._ref.items()) == list(model.items())  # ring order and bits


def test_clock_second_turn_takes_pages_in_hand_order_skipping_victims() -> None:
    clock = ClockPolicy()
    clock.admit_many([1, 2, 3, 4])
    clock.referenced([1, 3, 4])
    # first turn: only 2 is clear; second turn: 1, then 3 (2 is taken already)
    assert clock.choose(3) == [2, 1, 3]
    assert list(clock._ref) == [4, 1, 2, 3]  # the hand stopped after 3


class SingleOnly(ReplacementPolicy):
    """A user's policy that writes admit/remove only (the batch ones are inherited)."""

    name = "single-only"

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.pages: dict[int, None] = {}

    def admit(self, handle: int) -> None:
        self.log.append(("admit", handle))
        self.pages.setdefault(handle, None)

    def remove(self, handle: int) -> None:
        self.log.append(("remove", handle))
        self.pages.pop(handle, None)

    def choose(self, n: int) -> list[int]:
        return list(self.pages)[: max(0, n)]

    def __contains__(self, handle: object) -> bool:
        return handle in self.pages

    def __len__(self) -> int:
        return len(self.pages)


def test_inherited_batches_call_the_policys_own_admit_and_remove_in_order() -> None:
    p = SingleOnly()
    p.admit_many([3, 1, 3])
    p.remove_many([1, 7])
    assert p.log == [("admit", 3), ("admit", 1), ("admit", 3), ("remove", 1), ("remove", 7)]
    assert list(p.pages) == [3]


@pytest.mark.parametrize("name", NAMES)
@given(admitted=handles, removed=handles, referenced=handles)
def test_batches_equal_single_steps_for_every_policy(
        name: str, admitted: list[int], removed: list[int], referenced: list[int]) -> None:
    batched, single = make_policy(name), make_policy(name)
    batched.admit_many(admitted)
    for h in admitted:
        single.admit(h)
    for p in (batched, single):
        p.referenced(referenced)
    batched.remove_many(removed)
    for h in removed:
        single.remove(h)
    assert len(batched) == len(single)
    assert all((h in batched) == (h in single) for h in range(41))
    assert batched.choose(len(single)) == single.choose(len(single))
