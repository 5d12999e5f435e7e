"""Server contracts: schema specs and request/reply validation (capkern._contract)."""

from __future__ import annotations

from typing import Any

import pytest

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
from capkern.errors import ContractViolation

CASES: list[tuple[Spec, list[Any], list[Any]]] = [
    (Any_(), [None, 1, "x", [1], {"a": b""}], []),
    (Null(), [None], [0, False, "", [], {}]),
    (Bool(), [True, False], [0, 1, None, "true", 1.0]),
    (Int(), [0, -5, 2**63, 2**64 - 1], [True, False, 1.0, "1", None, [1]]),
    (Int(0, 10), [0, 5, 10], [-1, 11, True, 2.0]),
    (Int(lo=3), [3, 10**9], [2, -1]),
    (Int(hi=3), [3, -(10**9)], [4]),
    (Float(), [0.0, 1.5, -2, 3], [True, False, "1.0", None]),
    (Str(), ["", "abc", "x" * 256], [b"abc", 1, None, "x" * 257]),
    (Str(3), ["abc"], ["abcd"]),
    (Str(choices=frozenset({"a", "b"})), ["a", "b"], ["c", "", 1]),
    (Bytes(), [b"", b"x" * 100], ["abc", bytearray(b"x"), None, [1]]),
    (Bytes(2, 4), [b"ab", b"abcd"], [b"a", b"abcde"]),
    (ListOf(Int()), [[], [1, 2, 3]], [(1, 2), [1, "2"], [True], {"a": 1}, None]),
    (ListOf(Str(), max_len=2, min_len=1), [["a"], ["a", "b"]], [[], ["a", "b", "c"]]),
    (ListOf(ListOf(Bool())), [[[True], []]], [[[1]], [True]]),
    (Opt(Int()), [None, 3], ["3", True, 1.5]),
    (Tuple((Int(), Str())), [[1, "a"]], [[1], [1, "a", 2], ["a", 1], (1, "a"), None, {}]),
    (Tuple(()), [[]], [[1], None]),
    (
        Struct({"a": Int(), "b": Opt(Str())}, optional=frozenset({"b"})),
        [{"a": 1}, {"a": 1, "b": None}, {"a": 1, "b": "x"}],
        [{}, {"b": "x"}, {"a": 1, "c": 2}, {"a": "1"}, {"a": 1, "b": 2}, [("a", 1)], None],
    ),
]


@pytest.mark.parametrize(("spec", "good", "bad"), CASES, ids=lambda x: repr(x)[:40])
def test_spec_accepts_good_rejects_bad(spec: Spec, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        spec.check(value, "root")
    for value in bad:
        with pytest.raises(ContractViolation) as ei:
            spec.check(value, "svc.op")
        assert str(ei.value).startswith("svc.op"), str(ei.value)


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ContractViolation, match="expected int, got bool"):
        Int().check(True, "x")
    with pytest.raises(ContractViolation, match="expected float, got bool"):
        Float().check(False, "x")
    Int(0, 1).check(1, "x")


def test_nested_paths_are_named() -> None:
    spec = Struct(
        {
            "pages": ListOf(Struct({"vpn": Int(0), "data": Bytes()})),
            "pair": Tuple((Int(), Struct({"flag": Bool()}))),
        }
    )
    good = {"pages": [{"vpn": 1, "data": b""}], "pair": [1, {"flag": True}]}
    spec.check(good, "pager.evict")
    pair = [1, {"flag": True}]
    cases = [
        (
            {"pages": [{"vpn": 1, "data": b""}, {"vpn": -1, "data": b""}], "pair": pair},
            "pager.evict.pages[1].vpn",
        ),
        ({"pages": [{"vpn": 1, "data": "s"}], "pair": pair}, "pager.evict.pages[0].data"),
        ({"pages": [], "pair": [1, {"flag": 1}]}, "pager.evict.pair[1].flag"),
        ({"pages": [], "pair": ["x", {"flag": True}]}, "pager.evict.pair[0]"),
        ({"pages": [{"vpn": 1}], "pair": pair}, "pager.evict.pages[0]"),
    ]
    for value, path in cases:
        with pytest.raises(ContractViolation) as ei:
            spec.check(value, "pager.evict")
        assert str(ei.value).startswith(path + ":"), (str(ei.value), path)


def test_contract_request_path_names_list_index() -> None:
    svc = Contract("svc", {"op": Op(Struct({"items": ListOf(Int(0, 9))}))})
    svc.check_request("op", {"items": [1, 2, 3]})
    with pytest.raises(ContractViolation) as ei:
        svc.check_request("op", {"items": [1, 2, "3"]})
    assert str(ei.value).startswith("svc.op.items[2]: expected int, got str")
    with pytest.raises(ContractViolation, match=r"^svc\.op\.items\[2\]: 10 is outside"):
        svc.check_request("op", {"items": [1, 2, 10]})
    with pytest.raises(ContractViolation, match=r"^svc\.op\.items\[0\]: expected int, got bool"):
        svc.check_request("op", {"items": [True]})


def test_struct_unexpected_missing_optional() -> None:
    spec = Struct({"a": Int(), "b": Str()}, optional=frozenset({"b"}))
    with pytest.raises(ContractViolation, match=r"p: unexpected key 'z'"):
        spec.check({"a": 1, "z": 0}, "p")
    with pytest.raises(ContractViolation, match=r"p: unexpected key 3"):
        spec.check({"a": 1, 3: 0}, "p")
    with pytest.raises(ContractViolation, match=r"p: missing key 'a'"):
        spec.check({"b": "x"}, "p")
    spec.check({"a": 1}, "p")
    spec.check({"a": 1, "b": "x"}, "p")
    with pytest.raises(ContractViolation, match=r"p\.b: expected str"):
        spec.check({"a": 1, "b": None}, "p")  # optional means absent, not nil
    with pytest.raises(ContractViolation, match="expected map"):
        spec.check([], "p")


def test_int_range_message() -> None:
    with pytest.raises(ContractViolation, match=r"q: 11 is outside \[0, 10\]"):
        Int(0, 10).check(11, "q")


def test_tuple_messages() -> None:
    spec = Tuple((Int(), Int()))
    with pytest.raises(ContractViolation, match="t: expected array of 2, got list"):
        spec.check([1], "t")
    with pytest.raises(ContractViolation, match=r"t\[1\]: expected int"):
        spec.check([1, "2"], "t")


# -- Contract -------------------------------------------------------------------------------------

PAGER = Contract(
    "pager",
    {
        "evict": Op(
            Struct({"handle": Bytes(16, 16), "sealed": Bytes()}),
            reply=Null(),
            errors=frozenset({"full"}),
        ),
        "fetch": Op(
            Struct({"handle": Bytes(16, 16)}),
            reply=Struct({"sealed": Bytes()}),
            errors=frozenset({"missing", "io"}),
        ),
        "ping": Op(Null(), oneway=True),
    },
)
H = b"h" * 16


def test_check_request_ok() -> None:
    op = PAGER.check_request("fetch", {"handle": H})
    assert op is PAGER.ops["fetch"]
    assert PAGER.check_request("ping", None).oneway


def test_check_request_unknown_label() -> None:
    with pytest.raises(ContractViolation, match="pager: unknown label 'steal'"):
        PAGER.check_request("steal", {})
    with pytest.raises(ContractViolation, match="unknown label"):
        PAGER.check_request("", None)


def test_check_request_bad_body_names_path() -> None:
    with pytest.raises(ContractViolation, match=r"^pager\.fetch\.handle: 15 bytes"):
        PAGER.check_request("fetch", {"handle": b"h" * 15})
    with pytest.raises(ContractViolation, match=r"^pager\.fetch: missing key 'handle'"):
        PAGER.check_request("fetch", {})
    with pytest.raises(ContractViolation, match=r"^pager\.evict: unexpected key 'pid'"):
        PAGER.check_request("evict", {"handle": H, "sealed": b"", "pid": 3})
    with pytest.raises(ContractViolation, match=r"^pager\.ping: expected nil"):
        PAGER.check_request("ping", 0)


def test_check_reply_ok() -> None:
    PAGER.check_reply("fetch", "ok", {"sealed": b"xyz"})
    PAGER.check_reply("evict", "ok", None)


def test_check_reply_ok_bad_body() -> None:
    with pytest.raises(ContractViolation, match=r"pager\.fetch reply\.sealed: expected bytes"):
        PAGER.check_reply("fetch", "ok", {"sealed": "xyz"})
    with pytest.raises(ContractViolation, match=r"pager\.fetch reply: missing key 'sealed'"):
        PAGER.check_reply("fetch", "ok", {})
    with pytest.raises(ContractViolation, match=r"pager\.evict reply: expected nil"):
        PAGER.check_reply("evict", "ok", {"sealed": b""})


def test_check_reply_declared_error() -> None:
    PAGER.check_reply("fetch", "error", {"reason": "missing", "detail": ""})
    PAGER.check_reply("fetch", "error", {"reason": "io", "detail": "disk on fire"})
    PAGER.check_reply("evict", "error", {"reason": "full", "detail": "x"})


def test_check_reply_undeclared_reason() -> None:
    with pytest.raises(ContractViolation, match="undeclared error reason 'full'"):
        PAGER.check_reply("fetch", "error", {"reason": "full", "detail": ""})
    with pytest.raises(ContractViolation, match="undeclared error reason"):
        PAGER.check_reply("ping", "error", {"reason": "io", "detail": ""})


@pytest.mark.parametrize(
    "body",
    [
        None,
        "missing",
        {"reason": "missing"},
        {"detail": ""},
        {"reason": "missing", "detail": "", "extra": 1},
        {"reason": 1, "detail": ""},
        {"reason": "missing", "detail": None},
        {"reason": "missing", "detail": "d" * 1025},
        {"reason": "r" * 65, "detail": ""},
        ["missing", ""],
    ],
)
def test_check_reply_bad_error_body(body: Any) -> None:
    with pytest.raises(ContractViolation, match=r"^pager\.fetch reply"):
        PAGER.check_reply("fetch", "error", body)


@pytest.mark.parametrize("label", ["OK", "err", "", "reply", "fetch"])
def test_check_reply_other_labels(label: str) -> None:
    with pytest.raises(ContractViolation, match="label must be 'ok' or 'error'"):
        PAGER.check_reply("fetch", label, {"sealed": b""})
