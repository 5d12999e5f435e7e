"""The transition tables of reply objects, domains and page-table entries, without an
event loop (h11's style): every allowed move works, every other one fails loudly."""

from __future__ import annotations

import json

import pytest

from capkern._domain import ExitStatus
from capkern._states import MOVES, DomainState, IllegalTransition, PageState, ReplyState, move

ALL = [*ReplyState, *DomainState, *PageState]


@pytest.mark.parametrize("start", ALL)
def test_each_state_moves_exactly_as_its_table_says(start: ReplyState) -> None:
    for new in type(start):
        if new is start or new in MOVES[start]:
            assert move(start, new) is new
        else:
            with pytest.raises(IllegalTransition, match=f"{start} -> {new}"):
                move(start, new)


def test_terminal_states_are_terminal() -> None:
    for end in (ReplyState.DONE, ReplyState.ABORTED, DomainState.EXITED,
                DomainState.FAILED, DomainState.KILLED):
        assert MOVES[end] == frozenset()


def test_the_tables_name_only_their_own_kind() -> None:
    for start, targets in MOVES.items():
        assert all(type(t) is type(start) for t in targets)
    assert set(MOVES) == set(ALL)


def test_a_page_is_only_paged_in_after_it_was_swapped_or_zero() -> None:
    assert move(PageState.SWAPPED, PageState.RESIDENT) is PageState.RESIDENT
    with pytest.raises(IllegalTransition):
        move(PageState.SWAPPED, PageState.ZERO)  # its sealed copy would be forgotten
    with pytest.raises(IllegalTransition):
        move(PageState.ZERO, PageState.SWAPPED)  # nothing was ever sealed


def test_states_are_the_words_users_see() -> None:
    status = ExitStatus(3, "p", "exited", 0)
    word: str = status.state
    assert status.state is DomainState.EXITED and word == "exited" and status.ok
    assert repr(status) == "ExitStatus(pid=3, name='p', state='exited', code=0, error=None)"
    assert json.loads(json.dumps({"s": ReplyState.GONE})) == {"s": "gone"}
    with pytest.raises(ValueError):
        ExitStatus(3, "p", "exitted")  # a typo'd state is refused
