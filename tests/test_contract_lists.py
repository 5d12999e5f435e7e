"""Lists of ints and of bytes in a contract (handles, pages, blocks) are judged by
C-level scans; whatever such a list holds, the fast test agrees with the explaining
check -- including bools among ints, bytes-like objects among bytes, and an offending
item at either end of a long list."""

from __future__ import annotations

from typing import Any

import pytest

from capkern._contract import Bytes, Int, ListOf, Spec
from capkern.errors import ContractViolation


class Blob(bytes):
    """A bytes subclass: never on the wire, but a Spec can be called with anything."""


def _agree(spec: Spec, value: Any) -> bool:
    try:
        spec.check(value, "v")
        checked = True
    except ContractViolation:
        checked = False
    assert spec.valid(value) is checked, value
    return checked


HANDLES = ListOf(Int(0, 100), 64)
PAGES = ListOf(Bytes(2, 4), 64)


@pytest.mark.parametrize(("value", "ok"), [
    ([], True), ([0, 100], True), (list(range(50)), True),
    ([True], False), ([1, False], False), ([1] * 30 + [101], False), ([-1] + [1] * 30, False),
    ([1, 2.0], False), ([1, "2"], False), ([1, None], False), ([1] * 65, False),
])
def test_int_lists(value: list[Any], ok: bool) -> None:
    assert _agree(HANDLES, value) is ok


def test_int_lists_without_bounds() -> None:
    spec = ListOf(Int(), 8)
    assert _agree(spec, [-(1 << 70), 1 << 70]) and not _agree(spec, [1, True])


@pytest.mark.parametrize(("value", "ok"), [
    ([b"ab", b"abcd"], True), ([b"abc"] * 40, True),
    ([b"a"], False), ([b"ab"] * 30 + [b"abcde"], False), ([b"a"] + [b"ab"] * 30, False),
    ([b"ab", bytearray(b"ab")], False), ([b"ab", "ab"], False), ([b"ab", None], False),
    ([Blob(b"abc")], True), ([Blob(b"a")], False),
])
def test_bytes_lists(value: list[Any], ok: bool) -> None:
    assert _agree(PAGES, value) is ok
