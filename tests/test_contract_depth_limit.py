"""A kernel's configured nesting limit holds on contracted endpoints too.

Bodies a closed schema tests are packed without the shape walk, on the ground that such
a schema refuses whatever the walk would.  That holds for depth only when the schema is
no deeper than the kernel's ``Limits.max_depth``: a program may build a contract as deep
as :data:`capkern._contract.MAX_SCHEMA_DEPTH` (32) on a kernel booted with a smaller
limit, and its senders (or its replies) must still get :class:`NestingTooDeep`, as on a
plain endpoint, never a delivered body deeper than the kernel allows.
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, Limits, Process
from capkern._contract import Contract, Int, ListOf, Op, Spec, Struct, closed

LIMIT = 4


def _nested_schema(levels: int) -> Spec:
    spec: Spec = Int()
    for _ in range(levels):
        spec = ListOf(spec)
    return spec


def _nested(levels: int) -> Any:
    body: Any = 1
    for _ in range(levels):
        body = [body]
    return body


DEEP = _nested_schema(LIMIT + 3)
CONTRACTS = {
    "plain": None,
    "deep": Contract("deep", {"put": Op(DEEP, DEEP)}),
    "deep-field": Contract("deep", {"put": Op(Struct({"v": DEEP}), Struct({"v": DEEP}))}),
}


def _body(case: str) -> Any:
    return {"v": _nested(LIMIT + 3)} if case == "deep-field" else _nested(LIMIT + 3)


def test_the_deep_schemas_are_closed() -> None:
    contract = CONTRACTS["deep"]
    assert contract is not None and closed(contract.ops["put"].request)


@pytest.mark.parametrize("case", sorted(CONTRACTS))
async def test_a_request_deeper_than_the_limit_is_refused_at_the_senders_trap(
        case: str) -> None:
    seen: list[Any] = []

    async def server(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            seen.append(msg.body)
            proc.reply("ok", msg.body)

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.NestingTooDeep):
            await proc.call("s", "put", _body(case))
        with pytest.raises(capkern.NestingTooDeep):
            proc.nbsend("s", "put", _body(case))

    async with capkern.boot(paging=False, limits=Limits(max_depth=LIMIT)) as k:
        ep = k.new_endpoint("ep", CONTRACTS[case])
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert seen == []  # the server never got a body deeper than the kernel allows


@pytest.mark.parametrize("case", sorted(CONTRACTS))
async def test_a_reply_deeper_than_the_limit_is_refused_at_the_repliers_trap(
        case: str) -> None:
    refused: list[type[Exception]] = []
    shallow: Any = {"v": [[]]} if case == "deep-field" else [[]]

    async def server(proc: Process) -> None:
        await proc.recv("service")
        try:
            proc.reply("ok", _body(case))
        except capkern.CapkernError as exc:
            refused.append(type(exc))
        proc.reply("ok", shallow)

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "put", shallow)).body == shallow

    async with capkern.boot(paging=False, limits=Limits(max_depth=LIMIT)) as k:
        ep = k.new_endpoint("ep", CONTRACTS[case])
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert refused == [capkern.NestingTooDeep]


def test_container_depth_counts_levels_as_the_walk_does() -> None:
    from capkern._contract import MAX_SCHEMA_DEPTH, Any_, Opt, Str, Tuple, container_depth

    assert container_depth(Int()) == 0 and container_depth(Opt(Str())) == 0
    assert container_depth(Tuple(())) == 1 and container_depth(Struct({})) == 1
    assert container_depth(Opt(ListOf(Opt(Struct({"a": ListOf(Int())}))))) == 3
    assert container_depth(DEEP) == LIMIT + 3
    assert container_depth(ListOf(Any_())) == MAX_SCHEMA_DEPTH + 1
    contract = CONTRACTS["deep"]
    assert contract is not None
    assert contract.closed_request("put") and not contract.closed_request("put", LIMIT)
    assert contract.closed_reply("put", "error", 1) and not contract.closed_reply("put", "error", 0)
