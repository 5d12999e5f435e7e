"""A built-in schema node's parameters are its creator's values, and may be its code.

``Int(lo, hi)``, ``Str(max_len, choices)``, ``Bytes`` and ``ListOf`` bounds are whatever
the program that made the contract passed: an object whose comparison or ``in`` runs
that program's code at the trap of whoever sends or replies.  Such a schema is tested
like a program's own ``Spec`` node: if its code raises, the message is refused with a
typed :class:`~capkern.errors.ContractViolation` (counted), on the request path and on
the fast path for ``ok`` replies alike -- never the program's own exception.
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, Process
from capkern._contract import Bytes, Contract, Int, ListOf, Op, Spec, Str, Struct, closed


class Trap(int):
    """An int bound whose every comparison runs its creator's code (and raises)."""

    def _run(self, other: object) -> bool:
        raise RuntimeError("the contract creator's code ran")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = _run
    __hash__ = int.__hash__


class TrapSet(frozenset[str]):
    """A choices set whose membership test runs its creator's code (and raises)."""

    def __contains__(self, item: object) -> bool:
        raise RuntimeError("the contract creator's code ran")


SCHEMAS: dict[str, tuple[Spec, Any]] = {
    "int-lo": (Int(Trap(0), 10), 5),
    "int-hi": (Int(0, Trap(10)), 5),
    "str-choices": (Str(8, TrapSet({"a"})), "a"),
    "str-max-len": (Str(Trap(8)), "a"),
    "bytes-max-len": (Bytes(0, Trap(8)), b"a"),
    "list-max-len": (ListOf(Int(), Trap(8)), [1]),
}


@pytest.mark.parametrize("case", sorted(SCHEMAS))
def test_a_schema_with_a_programs_parameter_is_not_closed(case: str) -> None:
    spec, _value = SCHEMAS[case]
    assert not closed(spec)
    assert not closed(Struct({"v": spec}))


def test_plain_parameters_keep_a_schema_closed() -> None:
    assert closed(Struct({"a": Int(0, 10), "b": Str(8, frozenset({"x"})), "c": Bytes(0, 8),
                          "d": ListOf(Int(), 8, 1)}))


@pytest.mark.parametrize("case", sorted(SCHEMAS))
async def test_a_reply_tested_by_a_programs_parameter_is_a_typed_refusal(case: str) -> None:
    spec, value = SCHEMAS[case]
    contract = Contract("bounds", {"get": Op(Struct({}), Struct({"v": spec}),
                                             errors=frozenset({"bad"}))})
    refused: list[type[BaseException]] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        try:
            proc.reply("ok", {"v": value})
        except BaseException as exc:  # what the replier's trap raised, whatever it is
            refused.append(type(exc))
        proc.reply_error("bad", "")

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.ServerError):
            (await proc.call("s", "get", {})).ok()

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("bounds", contract)
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
        violations = k.stats.contract_violations
    assert refused == [capkern.ContractViolation]
    assert violations == 1


@pytest.mark.parametrize("case", sorted(SCHEMAS))
async def test_a_request_tested_by_a_programs_parameter_is_a_typed_refusal(case: str) -> None:
    spec, value = SCHEMAS[case]
    contract = Contract("bounds", {"put": Op(Struct({"v": spec}), oneway=True)})
    refused: list[type[BaseException]] = []

    async def client(proc: Process) -> None:
        try:
            await proc.send("s", "put", {"v": value})
        except BaseException as exc:
            refused.append(type(exc))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("bounds", contract)
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert refused == [capkern.ContractViolation]
