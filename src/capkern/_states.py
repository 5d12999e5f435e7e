"""The states of kernel objects as types, with their transition tables (sans-IO).

A reply object, a domain and a page-table entry each move through a few states.  They
are :class:`enum.StrEnum` members (so they print, compare and serialise as the plain
words users already see: ``status.state == "exited"`` still holds), and every change
goes through :func:`move`, which refuses a move its table does not allow: a kernel bug
that would, say, revive an aborted reply or page in a page that was never swapped out
fails loudly at the place it happens instead of corrupting state quietly.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["MOVES", "DomainState", "IllegalTransition", "PageState", "ReplyState", "move"]


class IllegalTransition(RuntimeError):
    """A state change its transition table forbids: a bug in the kernel, not bad input."""


class _Word(enum.StrEnum):
    """A state that shows as its word (``repr`` too), as the plain strings did."""

    def __repr__(self) -> str:
        return repr(self.value)


class ReplyState(_Word):
    """A one-shot reply object (``ipc.ReplyObject``)."""

    WAITING = "waiting"  # the caller is blocked on it
    DONE = "done"  # used: the answer was delivered (or dropped, the caller having gone)
    GONE = "gone"  # the caller was cancelled; a late answer is dropped
    ABORTED = "aborted"  # its holder died or dropped it; the caller got CallAborted


class DomainState(_Word):
    """A protection domain (``Domain.state``; ``ExitStatus.state`` is a final one)."""

    STARTING = "starting"  # spawned, not yet running (or its OS process not yet up)
    RUNNING = "running"
    RESTARTING = "restarting"  # its OS process died; the supervisor starts another
    EXITED = "exited"
    FAILED = "failed"
    KILLED = "killed"


class PageState(_Word):
    """A page-table entry's contents: where the page's data is."""

    ZERO = "zero"  # never written (or back to demand-zero): a fault zero-fills
    RESIDENT = "resident"  # in a frame
    SWAPPED = "swapped"  # only its sealed copy, held by the pager


_ENDED = frozenset({DomainState.EXITED, DomainState.FAILED, DomainState.KILLED})

#: for each state, the states it may move to
MOVES: dict[enum.StrEnum, frozenset[enum.StrEnum]] = {
    ReplyState.WAITING: frozenset({ReplyState.DONE, ReplyState.GONE, ReplyState.ABORTED}),
    ReplyState.GONE: frozenset({ReplyState.DONE}),
    ReplyState.DONE: frozenset(),
    ReplyState.ABORTED: frozenset(),
    DomainState.STARTING: frozenset({DomainState.RUNNING, *_ENDED}),
    DomainState.RUNNING: frozenset({DomainState.STARTING, DomainState.RESTARTING, *_ENDED}),
    DomainState.RESTARTING: frozenset({DomainState.STARTING, DomainState.RUNNING, *_ENDED}),
    DomainState.EXITED: frozenset(),
    DomainState.FAILED: frozenset(),
    DomainState.KILLED: frozenset(),
    PageState.ZERO: frozenset({PageState.RESIDENT}),
    PageState.RESIDENT: frozenset({PageState.SWAPPED, PageState.ZERO}),
    PageState.SWAPPED: frozenset({PageState.RESIDENT}),
}

S = TypeVar("S", bound=enum.StrEnum)


def move(current: S, new: S) -> S:
    """``new`` if the table allows ``current -> new`` (staying put is always allowed),
    else :class:`IllegalTransition`."""
    if new is not current and new not in MOVES[current]:
        raise IllegalTransition(f"{type(current).__name__}: {current} -> {new} is not allowed")
    return new
