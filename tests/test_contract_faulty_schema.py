"""A program's faulty schema node gives its callers a typed error, never its exception.

A program may bind its endpoint to a contract with its own ``Spec`` nodes; their code
runs at the sender's trap (and at the replier's, for replies), and the contract's test is
compiled there on first use.  A node whose ``valid``, ``check`` or ``describe`` raises,
or returns nonsense, must make the message :class:`ContractViolation` -- the sender's
call must not fail with the server's ``RuntimeError`` or ``TypeError``.
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Op, Spec, Struct


class Raises(Spec):
    def valid(self, value: Any) -> bool:
        raise RuntimeError("schema code ran")

    def check(self, value: Any, path: str) -> None:
        raise RuntimeError("schema code ran")


class BadName(Spec):
    def valid(self, value: Any) -> bool:
        return False

    def check(self, value: Any, path: str) -> None:
        raise LookupError("no")

    def describe(self) -> str:
        return 5  # type: ignore[return-value]


SCHEMAS: dict[str, Spec] = {"raises": Raises(), "raises-inside": Struct({"v": Raises()}),
                            "bad-describe": BadName()}


@pytest.mark.parametrize("case", sorted(SCHEMAS))
async def test_a_faulty_request_schema_gives_contract_violation(case: str) -> None:
    contract = Contract("faulty", {"put": Op(SCHEMAS[case])})

    async def client(proc: Process) -> None:
        for _ in range(2):
            with pytest.raises(capkern.ContractViolation):
                await proc.call("s", "put", {"v": 1})

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("faulty", contract)
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status


@pytest.mark.parametrize("case", sorted(SCHEMAS))
async def test_a_faulty_reply_schema_gives_contract_violation(case: str) -> None:
    contract = Contract("faulty", {"put": Op(Struct({}), SCHEMAS[case], errors=frozenset({"bad"}))})
    refused: list[type[Exception]] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        try:
            proc.reply("ok", {"v": 1})
        except Exception as exc:
            refused.append(type(exc))
        proc.reply_error("bad", "")

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.CapkernError):
            (await proc.call("s", "put", {})).ok()

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("faulty", contract)
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert refused == [capkern.ContractViolation]
