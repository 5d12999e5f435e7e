"""The fast contract test (``Spec.valid``) and the explaining one (``check``) agree for
every Spec, the user's own included.

Every message on a contracted endpoint is let through by ``valid`` alone; ``check`` runs
only to explain a refusal.  So a Spec whose ``check`` says more than its ``valid`` --
a user's subclass of a built-in Spec that refines ``check`` and inherits the parent's
fast ``valid`` -- would let an out-of-contract request reach a server (or an
out-of-contract reply reach the caller).  These tests make real calls through a real
contracted endpoint with such specs, and compare ``valid`` with ``check`` on the values
where a type test and an ``isinstance`` test part ways (int subclasses, ``bool``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import capkern
from capkern._contract import (
    Any_,
    Bool,
    Bytes,
    Contract,
    Float,
    Int,
    ListOf,
    Null,
    Op,
    Opt,
    Spec,
    Str,
    Struct,
    Tuple,
)
from capkern._proc import Process
from capkern.errors import ContractViolation


@dataclass(frozen=True)
class EvenInt(Int):
    """A user's refinement: an int in range that is also even (check only)."""

    def check(self, value: Any, path: str) -> None:
        super().check(value, path)
        if value % 2:
            raise ContractViolation(f"{path}: {value} is odd")


@dataclass(frozen=True)
class Slug(Str):
    """A user's refinement: a lowercase identifier (check only)."""

    def check(self, value: Any, path: str) -> None:
        super().check(value, path)
        if not value.isidentifier() or value.lower() != value:
            raise ContractViolation(f"{path}: {value!r} is not a slug")


@dataclass(frozen=True)
class NoSecrets(Struct):
    """A user's refinement of a map: no field may hold the word 'secret' (check only)."""

    def check(self, value: Any, path: str) -> None:
        super().check(value, path)
        if any("secret" in str(v) for v in value.values()):
            raise ContractViolation(f"{path}: a secret")


@dataclass(frozen=True)
class Sized(Bytes):
    """A user's refinement of bytes: a whole number of 16-byte blocks (check only)."""

    def check(self, value: Any, path: str) -> None:
        super().check(value, path)
        if len(value) % 16:
            raise ContractViolation(f"{path}: not whole blocks")


class NoZeros:
    """A mixin refining any spec's check: no zero bytes or zero ints."""

    def check(self, value: Any, path: str) -> None:
        super().check(value, path)  # type: ignore[misc]
        if value in (0, b"\x00"):
            raise ContractViolation(f"{path}: zero")


@dataclass(frozen=True)
class NonZero(NoZeros, Int):
    """A refinement through a mixin: the class itself defines neither method."""


@dataclass(frozen=True)
class NonZeroFast(NonZero):
    """A subclass of a refined spec that writes its own fast test: kept."""

    def valid(self, value: Any) -> bool:
        return type(value) is int and value != 0


class Colour(enum.IntEnum):
    RED = 1


def _checks(spec: Spec, value: Any) -> bool:
    try:
        spec.check(value, "x")
    except ContractViolation:
        return False
    return True


REFINED: list[tuple[Spec, Any, Any]] = [  # spec, a value it takes, one only check refuses
    (EvenInt(0, 100), 4, 3),
    (Slug(16), "abc", "Abc"),
    (NoSecrets({"a": Str()}), {"a": "x"}, {"a": "secret"}),
    (Sized(), bytes(32), bytes(17)),
    (NonZero(), 5, 0),
    (ListOf(NonZero()), [1], [1, 0]),
    (NonZeroFast(), 5, 0),
    (ListOf(EvenInt()), [2, 4], [2, 3]),
    (Opt(EvenInt()), None, 5),
    (Tuple((Slug(), EvenInt())), ["a", 2], ["a", 1]),
    (Struct({"n": EvenInt(), "s": Opt(Slug())}, frozenset({"s"})), {"n": 2}, {"n": 2, "s": "A"}),
]


@pytest.mark.parametrize(("spec", "good", "bad"), REFINED, ids=lambda v: type(v).__name__)
def test_a_refined_check_is_also_the_fast_test(spec: Spec, good: Any, bad: Any) -> None:
    assert spec.valid(good) and _checks(spec, good)
    assert not _checks(spec, bad)
    assert spec.valid(bad) is False  # the fast path must not let it through


def test_a_spec_that_writes_its_own_fast_test_keeps_it() -> None:
    assert NonZeroFast.valid is not Spec.valid
    assert NonZero.valid is Spec.valid and EvenInt.valid is Spec.valid
    assert Int.valid is not Spec.valid and ListOf.valid is not Spec.valid


INT_LIKE = [3, True, False, Colour.RED, 2**64, -(2**70), 1.0]


@pytest.mark.parametrize("value", INT_LIKE, ids=repr)
@pytest.mark.parametrize("spec", [Int(), Int(0, 10), ListOf(Int()), ListOf(Int(0, 10)),
                                  Tuple((Int(),)), Opt(Int(0, 10))], ids=repr)
def test_int_specs_agree_on_int_like_values(spec: Spec, value: Any) -> None:
    wrapped = value if not isinstance(spec, ListOf | Tuple) else [value]
    assert spec.valid(wrapped) == _checks(spec, wrapped), (spec, wrapped)


# -- random spec trees against random wire values ---------------------------------------------

_bounds = st.one_of(st.none(), st.integers(-3, 3))
_leaf_specs = st.one_of(
    st.builds(Any_), st.builds(Null), st.builds(Bool), st.builds(Float),
    st.builds(Int, _bounds, _bounds),
    st.builds(Str, st.integers(0, 4), st.one_of(st.none(), st.frozensets(st.text(max_size=2)))),
    st.builds(Bytes, st.integers(0, 3), st.integers(0, 5)),
)
_specs = st.recursive(
    _leaf_specs,
    lambda inner: st.one_of(
        st.builds(ListOf, inner, st.integers(0, 4), st.integers(0, 2)),
        st.builds(ListOf, st.builds(Int, _bounds, _bounds), st.integers(0, 4), st.integers(0, 2)),
        st.builds(Opt, inner),
        st.builds(Tuple, st.lists(inner, max_size=3).map(tuple)),
        st.dictionaries(st.sampled_from("abcd"), inner, max_size=3).flatmap(
            lambda fields: st.builds(Struct, st.just(fields),
                                     st.frozensets(st.sampled_from(sorted(fields) or ["a"])))),
    ),
    max_leaves=6,
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([2**64, -(2**63)])
    | st.floats() | st.text(max_size=5) | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from("abcde") | st.integers(0, 2), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(spec=_specs, value=_values)
def test_valid_agrees_with_check_on_random_spec_trees(spec: Spec, value: Any) -> None:
    """Any combination of the built-in specs (Struct with optional and int keys, Opt,
    Tuple, ListOf with Int bounds, bool against int and float, bounded bytes and str):
    the fast test and the explaining check take exactly the same values."""
    assert spec.valid(value) == _checks(spec, value), (spec, value)


# -- through a real contracted endpoint ------------------------------------------------------


CONTRACT = Contract("refined", {
    "put": Op(Struct({"n": EvenInt(0, 1000), "tag": Slug(16)}), reply=EvenInt(0, 1000),
              errors=frozenset({"bad"})),
})


async def test_an_out_of_contract_request_never_reaches_the_server(
        capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []

    async def server(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            seen.append(msg.body)
            proc.reply("ok", msg.body["n"] + 1)  # always odd: out of its own contract

    async with capkern.boot(paging=False) as kernel:
        ep = kernel.new_endpoint("refined", CONTRACT)
        kernel.spawn(server, caps={"service": capkern.Grant(ep, "r")})

        outcomes: list[str] = []

        async def client(proc: Process) -> None:
            out = outcomes
            for body in ({"n": 3, "tag": "ok"}, {"n": 2, "tag": "Not-A-Slug"},
                         {"n": 2, "tag": "fine"}):
                try:
                    await proc.call("server", "put", body)
                    out.append("answered")
                except ContractViolation as exc:
                    out.append(f"refused: {exc}")
                except capkern.errors.CapkernError as exc:
                    out.append(type(exc).__name__)

        pid = kernel.spawn(client, caps={"server": capkern.Grant(ep, "w")})
        status = await kernel.wait(pid)
    assert status.ok, status
    assert seen == [{"n": 2, "tag": "fine"}]  # the two refused bodies never arrived
    assert outcomes[0].startswith("refused") and "odd" in outcomes[0]
    assert outcomes[1].startswith("refused") and "slug" in outcomes[1]
    # the server's odd reply is out of its contract: the caller never gets it as data
    assert outcomes[2] != "answered"
