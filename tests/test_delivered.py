"""What IPC wakes a blocked task with: an ``outcome.Outcome`` holding the value handed
over, usable exactly once (as ``outcome.Value`` is), so trio's wake-up protocol and any
code expecting an Outcome keep working."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

import outcome
import pytest

from capkern._message import Delivered


def test_a_delivery_is_an_outcome_unwrapped_once() -> None:
    got = Delivered({"n": 1})
    assert isinstance(got, outcome.Outcome)
    assert got.unwrap() == {"n": 1}
    with pytest.raises(outcome.AlreadyUsedError):
        got.unwrap()
    assert repr(got) == "Delivered({'n': 1})"


def test_a_delivery_sends_its_value_into_a_generator_once() -> None:
    seen: list[Any] = []

    def gen() -> Generator[None, Any, None]:
        while True:
            seen.append((yield))

    g = gen()
    next(g)
    got = Delivered(5)
    got.send(g)
    assert seen == [5]
    with pytest.raises(outcome.AlreadyUsedError):
        got.send(g)


async def test_a_delivery_sends_its_value_into_an_async_generator_once() -> None:
    seen: list[Any] = []

    async def agen() -> AsyncGenerator[int, Any]:
        while True:
            seen.append((yield 0))

    g = agen()
    await g.asend(None)
    got = Delivered("x")
    await got.asend(g)
    assert seen == ["x"]
    with pytest.raises(outcome.AlreadyUsedError):
        await got.asend(g)
    await g.aclose()
