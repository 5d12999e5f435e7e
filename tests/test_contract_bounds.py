"""A contract is a program's input: bounded when an endpoint is created.

Any domain may create an endpoint with its own contract, and every sender to that
endpoint is then tested against it.  A schema deeper than any message may nest, a
cyclic one, a huge one or one with foreign nodes is refused at creation with
``ConfigError``; a deep but allowed schema is tested correctly (its compiled test calls
deeper nodes through their own ``valid``).
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern._contract import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    Int,
    ListOf,
    Op,
    Spec,
    Struct,
    check_schema,
)
from capkern._contract_compile import MAX_INLINE
from capkern._proc import Process
from capkern.errors import ConfigError, ContractViolation


def nested(levels: int, max_len: int = 2) -> Spec:
    spec: Spec = Int(0, 9)
    for _ in range(levels - 1):
        spec = ListOf(spec, max_len=max_len)
    return spec


def cyclic() -> Spec:
    outer = ListOf(Int())
    object.__setattr__(outer, "item", ListOf(outer))  # a frozen node, forced into a loop
    return outer


def wide() -> Spec:
    return Struct({f"f{i}": Int() for i in range(MAX_SCHEMA_NODES)})


BAD: dict[str, Any] = {
    "too-deep": capkern.Contract("deep", {"x": Op(nested(MAX_SCHEMA_DEPTH + 1))}),
    "cyclic": capkern.Contract("loop", {"x": Op(cyclic())}),
    "too-many-nodes": capkern.Contract("wide", {"x": Op(wide())}),
    "foreign-node": capkern.Contract("odd", {"x": Op(Struct({"a": {"not": "a spec"}}))}),  # type: ignore[dict-item]
    "foreign-op": capkern.Contract("odd", {"x": "not an op"}),  # type: ignore[dict-item]
    "not-a-contract": {"x": Op(Int())},
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_contract_is_refused_at_creation(name: str) -> None:
    with pytest.raises(ConfigError):
        check_schema(BAD[name])


@pytest.mark.parametrize("name", sorted(BAD))
async def test_a_program_cannot_create_an_endpoint_with_a_bad_contract(name: str) -> None:
    outcome: list[str] = []

    async def program(proc: Process) -> None:
        try:
            proc.new_endpoint("mine", BAD[name])
        except ConfigError:
            outcome.append("refused")

    async with capkern.boot(paging=False) as kernel:
        status = await kernel.wait(kernel.spawn(program))
        assert status.ok and outcome == ["refused"]
        with pytest.raises(ConfigError):
            kernel.new_endpoint("root's", BAD[name])


async def test_the_deepest_allowed_schema_tests_messages_right() -> None:
    assert MAX_SCHEMA_DEPTH > MAX_INLINE + 8  # deep enough to pass the inlined levels
    contract = capkern.Contract("deep", {"x": Op(nested(MAX_SCHEMA_DEPTH, max_len=1))})
    check_schema(contract)

    def body(levels: int, leaf: Any) -> Any:
        for _ in range(levels - 1):
            leaf = [leaf]
        return leaf

    contract.check_request("x", body(MAX_SCHEMA_DEPTH, 5))
    for bad in (body(MAX_SCHEMA_DEPTH, 10), body(MAX_SCHEMA_DEPTH, "5"),
                body(MAX_SCHEMA_DEPTH - 1, 5), body(MAX_SCHEMA_DEPTH + 1, 5),
                body(MAX_SCHEMA_DEPTH - 3, [5, 5])):
        with pytest.raises(ContractViolation):
            contract.check_request("x", bad)


async def test_a_sender_to_a_programs_deep_contract_gets_typed_errors_only() -> None:
    """End to end: a program serves a deep (allowed) contract; a client's good and bad
    calls get the answer or ContractViolation, never another exception."""
    contract = capkern.Contract("deep", {"x": Op(nested(MAX_SCHEMA_DEPTH, max_len=1), Int())})
    results: list[Any] = []

    async def server(proc: Process) -> None:
        slot = proc.new_endpoint("deep", contract)
        await proc.send("boot", "ep", caps=[slot])
        while True:
            await proc.recv(slot)
            proc.reply("ok", 1)

    async def client(proc: Process) -> None:
        msg = await proc.recv("boot")
        ep = msg.caps[0]
        good: Any = 5
        for _ in range(MAX_SCHEMA_DEPTH - 1):
            good = [good]
        results.append((await proc.call(ep, "x", good)).body)
        with pytest.raises(ContractViolation):
            await proc.call(ep, "x", [[["x"]]])
        results.append("refused")

    async with capkern.boot(paging=False) as kernel:
        boot_ep = kernel.new_endpoint("boot")
        kernel.spawn(server, name="server", caps={"boot": capkern.Grant(boot_ep, "wg")})
        pid = kernel.spawn(client, name="client", caps={"boot": capkern.Grant(boot_ep, "r")})
        status = await kernel.wait(pid)
        assert status.ok, status
    assert results == [1, "refused"]
