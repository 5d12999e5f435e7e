"""Members of a pager set and hedged requests to them (TRUSTED).

A :class:`Member` is the kernel's account of one untrusted pager of a set: failures,
integrity failures, quarantine.  :func:`race` asks members for something until enough
good answers came back: ``want`` at once, one more after each failure, and one more
after each ``hedge`` seconds of silence (a hedged request: a slow or hung member costs
one delay, not a deadline).  A member still silent when enough answered is asked later
next time (its ``streak`` grows); an answer resets it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from ..mmu._ports import ServerPort

__all__ = ["Member", "race"]

T = TypeVar("T")


class Member:
    """One pager of the set, as the kernel keeps account of it."""

    def __init__(self, index: int, port: ServerPort) -> None:
        self.index = index
        self.port = port
        self.failures = 0  # typed errors, timeouts, dead channel
        self.streak = 0  # failures (or answers too slow to be used) since its last answer
        self.integrity = 0  # copies or shards it returned that failed the check
        self.quarantined = False

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.port.name, "failures": self.failures,
                "integrity": self.integrity, "quarantined": self.quarantined}


async def race(members: Sequence[Member], order: list[int], want: int,
               attempt: Callable[[int], Awaitable[T | None]], hedge: float,
               counts: Counter[str]) -> list[T]:
    """Ask members in ``order`` until ``want`` answers are good: ``want`` at once,
    one more after each failure, and one more after each ``hedge`` of silence.
    Members still silent when enough answered are asked later next time."""
    got: list[T] = []
    pending = list(order)
    send, recv = trio.open_memory_channel[T | None](math.inf)
    running = 0
    silent: set[int] = set()
    async with trio.open_nursery() as nursery:

        async def run(index: int) -> None:
            answer = await attempt(index)
            silent.discard(index)
            send.send_nowait(answer)

        def launch() -> None:
            nonlocal running
            index = pending.pop(0)
            silent.add(index)
            nursery.start_soon(run, index)
            running += 1

        for _ in range(min(want, len(pending))):
            launch()
        while running:
            with trio.move_on_after(hedge if pending else math.inf) as scope:
                answer = await recv.receive()
            if scope.cancelled_caught:
                counts["hedges"] += 1
                launch()
                continue
            running -= 1
            if answer is not None:
                got.append(answer)
                if len(got) >= want:
                    break
            elif pending:
                launch()
        nursery.cancel_scope.cancel()
    for index in silent:  # too slow to be used: asked after the others next time
        members[index].streak += 1
        counts["stragglers"] += 1
    return got
