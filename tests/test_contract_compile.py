"""Compiled contract tests (:mod:`capkern._contract_compile`) answer exactly as the
schema's own ``valid`` on every operation of the system contracts -- for bodies built to
fit, their small breakages and arbitrary wire values -- and on schemas a program builds
itself: float bounds, odd field names, subclasses and user specs keep their meaning."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capkern._contract import (
    _KINDS,
    Any_,
    Bytes,
    Float,
    Int,
    ListOf,
    Opt,
    Spec,
    Str,
    Struct,
    Tuple,
)
from capkern._contract_compile import compile_valid
from capkern.errors import ContractViolation

from .test_contract_fastpath import SPECS, fitting, mutations, wire_values


def _same(spec: Spec, value: Any) -> None:
    assert compile_valid(spec, _KINDS)(value) is spec.valid(value), (spec, value)


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[n for n, _ in SPECS])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_compiled_agrees_on_fitting_and_broken_bodies(name: str, spec: Spec,
                                                      data: st.DataObject) -> None:
    good = fitting(spec, data.draw)
    assert compile_valid(spec, _KINDS)(good)
    for bad in mutations(good):
        _same(spec, bad)


@pytest.mark.parametrize(("name", "spec"), SPECS, ids=[n for n, _ in SPECS])
@settings(max_examples=25, deadline=None)
@given(value=wire_values)
def test_compiled_agrees_on_any_wire_value(name: str, spec: Spec, value: Any) -> None:
    _same(spec, value)


class Even(Spec):
    """A user's spec with only ``check``."""

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or value % 2:
            raise ContractViolation(f"{path}: not even")


class Small(Int):
    """A subclass of a schema class with its own test: never compiled as an Int."""

    def valid(self, value: Any) -> bool:
        return super().valid(value) and value < 10


ODD = Struct({"a b": Int(0, 5), "'); import os; ('": Str(3), "x": Opt(ListOf(Even(), 3)),
              "f": Int(0.5, 2.5), "s": Small(0, 100), "t": Tuple((Float(), Any_())),  # type: ignore[arg-type]
              "b": ListOf(Bytes(1, 2), 2, 1), "c": Str(5, frozenset({"on", "off"}))},
             frozenset({"x", "t"}))


@pytest.mark.parametrize("value", [
    {"a b": 1, "'); import os; ('": "abc", "f": 1, "s": 3, "b": [b"a"], "c": "on"},
    {"a b": 1, "'); import os; ('": "abc", "f": 1, "s": 30, "b": [b"a"], "c": "on"},
    {"a b": 1, "'); import os; ('": "abc", "f": 0, "s": 3, "b": [b"a"], "c": "on"},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "onn"},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "on",
     "x": [2, 4], "t": [1.5, {"any": 1}]},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "on",
     "x": [2, 3]},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "on", "y": 1},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [], "c": "on"},
    {"a b": 1, "f": 2, "s": 3, "b": [b"a"], "c": "on"},
    {"a b": True, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "on"},
    {"a b": 1, "'); import os; ('": "abc", "f": 2, "s": 3, "b": [b"a"], "c": "on",
     "t": [True, None]},
    [], None, {1: 2},
])
def test_a_programs_own_schema_keeps_its_meaning(value: Any) -> None:
    _same(ODD, value)


def test_field_names_and_float_bounds_are_constants_not_code() -> None:
    valid = compile_valid(Struct({"__import__('os')": Int(0.5, 1.5)}), _KINDS)  # type: ignore[arg-type]
    assert valid({"__import__('os')": 1}) and not valid({"__import__('os')": 2})
