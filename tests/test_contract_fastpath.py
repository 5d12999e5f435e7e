"""A contract's fast test (``Spec.valid``) agrees with its explaining check (``check``).

Every message on a contracted endpoint is tested with ``valid``, which builds no
strings; ``check`` runs only to say what is wrong.  The two must never disagree: a
value ``valid`` lets through that ``check`` would refuse is an out-of-contract message
reaching a server (or the kernel).  Checked on every operation of the system contracts,
for bodies built to fit and then mutated, and for arbitrary wire values.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from capkern._protocols import BLOCKDEV, CRYPT, PAGER
from capkern.errors import ContractViolation

CONTRACTS = (PAGER, BLOCKDEV, CRYPT)
SPECS = [(f"{c.name}.{label}.{side}", getattr(op, side))
         for c in CONTRACTS for label, op in c.ops.items() for side in ("request", "reply")]

wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), inner, max_size=4),
    max_leaves=12,
)


def _checks(spec: Spec, value: Any) -> bool:
    try:
        spec.check(value, "x")
    except ContractViolation:
        return False
    return True


def fitting(spec: Spec, draw: Any) -> Any:
    """A value built to fit ``spec`` (hypothesis ``draw``)."""
    if isinstance(spec, Any_ | Null):
        return None
    if isinstance(spec, Bool):
        return draw(st.booleans())
    if isinstance(spec, Int):
        lo = spec.lo if spec.lo is not None else -(2**63)
        hi = spec.hi if spec.hi is not None else 2**63 - 1
        return draw(st.sampled_from([lo, hi, (lo + hi) // 2]))
    if isinstance(spec, Float):
        return draw(st.floats(allow_nan=False))
    if isinstance(spec, Str):
        if spec.choices:
            return draw(st.sampled_from(sorted(spec.choices)))
        return draw(st.text(max_size=min(spec.max_len, 8)))
    if isinstance(spec, Bytes):
        return bytes(draw(st.integers(spec.min_len, min(spec.max_len, spec.min_len + 8))))
    if isinstance(spec, ListOf):
        n = draw(st.integers(spec.min_len, min(spec.max_len, spec.min_len + 3)))
        return [fitting(spec.item, draw) for _ in range(n)]
    if isinstance(spec, Tuple):
        return [fitting(item, draw) for item in spec.items]
    if isinstance(spec, Opt):
        return None if draw(st.booleans()) else fitting(spec.inner, draw)
    if isinstance(spec, Struct):
        return {k: fitting(v, draw) for k, v in spec.fields.items()
                if k not in spec.optional or draw(st.booleans())}
    raise AssertionError(f"no generator for {spec!r}")


def mutations(value: Any) -> list[Any]:
    """Small breakages of a value: wrong types, extra and missing keys, bad items."""
    out: list[Any] = [None, True, 1.5, "s", b"b", [], {}, -1, 2**64]
    if isinstance(value, dict):
        out.append({**value, "extra": 1})
        for key in value:
            out.append({k: v for k, v in value.items() if k != key})
            for bad in mutations_leaf(value[key]):
                out.append({**value, key: bad})
    if isinstance(value, list):
        out += [[*value, object()], value[:-1], [*value, None]]
        for i, item in enumerate(value):
            for bad in mutations_leaf(item):
                out.append([*value[:i], bad, *value[i + 1:]])
    return out


def mutations_leaf(value: Any) -> list[Any]:
    return [None, "s", -(2**70), True, [value], {"k": value}]


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[n for n, _ in SPECS])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_valid_agrees_with_check_on_fitting_and_broken_bodies(
        name: str, spec: Spec, data: st.DataObject) -> None:
    good = fitting(spec, data.draw)
    assert spec.valid(good) and _checks(spec, good), (name, good)
    for bad in mutations(good):
        assert spec.valid(bad) == _checks(spec, bad), (name, bad)


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[n for n, _ in SPECS])
@settings(max_examples=25, deadline=None)
@given(value=wire_values)
def test_valid_agrees_with_check_on_any_wire_value(name: str, spec: Spec, value: Any) -> None:
    assert spec.valid(value) == _checks(spec, value), (name, value)


def test_a_refused_body_still_names_its_path() -> None:
    with pytest.raises(ContractViolation, match=r"pager\.fetch\.handle: expected int"):
        PAGER.check_request("fetch", {"handle": "1"})
    with pytest.raises(ContractViolation, match=r"crypt\.unseal reply\.ok\[1\]"):
        CRYPT.check_reply("unseal", "ok", {"plain": [b"", b""], "ok": [1, "x"]})


def test_a_user_spec_with_only_check_still_works() -> None:
    class Even(Spec):
        def check(self, value: Any, path: str) -> None:
            if not isinstance(value, int) or value % 2:
                raise ContractViolation(f"{path}: not even")

    contract = Contract("even", {"put": Op(Struct({"n": Even()}))})
    contract.check_request("put", {"n": 4})
    with pytest.raises(ContractViolation, match=r"even\.put\.n: not even"):
        contract.check_request("put", {"n": 3})
