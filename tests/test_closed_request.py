"""A request to an operation with a closed schema is checked in one pass (encoded
without the shape walk, tested by the compiled schema); anything that fails that pass is
checked again from the start, so it is refused, explained and counted exactly as
before: out of contract as ``ContractViolation``, a body the wire cannot carry as its own
wire error."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, ListOf, Op, Str, Struct
from capkern.errors import ContractViolation, NestingTooDeep, UnencodableBody

PUT = Contract("put", {"put": Op(request=Struct({"k": Str(8), "v": ListOf(Int(0, 9), 4)}))})


async def _serve_once(k: capkern.Kernel, body: Any) -> tuple[list[Any], list[str]]:
    """Send ``body`` as ``put`` to a server on a PUT endpoint; what it got, and the
    sender's error (if any)."""
    got: list[Any] = []
    errors: list[str] = []

    async def server(proc: Process) -> None:
        got.append((await proc.recv("service")).body)

    async def client(proc: Process) -> None:
        try:
            await proc.send("out", "put", body)
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)

    ep = k.new_endpoint("put", PUT)
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await trio.sleep(1)
    assert (await k.wait(k.spawn(client, caps={"out": Grant(ep, "w")}))).ok
    if not got:
        k.kill(srv)
    await k.wait(srv)
    return got, errors


async def test_a_request_in_contract_is_delivered_as_decoded_wire_data(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    body = {"k": "a", "v": (1, 2)}
    got, errors = await _serve_once(bare_kernel, body)
    assert errors == []
    assert got == [{"k": "a", "v": [1, 2]}]  # decoded: the tuple arrives as a list
    assert got[0] is not body


@pytest.mark.parametrize("body", [
    {"k": "a", "v": [1, 10]},  # an item out of range
    {"k": "a"},  # a field missing
    {"k": "a", "v": [], "x": 1},  # a field too many
    {"k": "a" * 9, "v": []},  # a str too long
])
async def test_a_request_out_of_contract_is_refused_and_counted(
        body: Any, autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    got, errors = await _serve_once(bare_kernel, body)
    assert got == []
    assert errors == [ContractViolation.__name__]
    assert bare_kernel.stats.contract_violations == 1


@pytest.mark.parametrize(("body", "error"), [
    ({"k": "a", "v": [object()]}, UnencodableBody),
    ({"k": "a", "v": [[[[[[[[1]]]]]]]]}, ContractViolation),
])
async def test_a_body_the_wire_refuses_is_refused_as_before(
        body: Any, error: type[Exception], autojump_clock: trio.abc.Clock,
        bare_kernel: capkern.Kernel) -> None:
    got, errors = await _serve_once(bare_kernel, body)
    assert got == []
    assert errors == [error.__name__]


async def test_a_kernel_with_a_smaller_depth_limit_still_walks(
        autojump_clock: trio.abc.Clock) -> None:
    """A schema deeper than the kernel's depth limit is not closed for that kernel: the
    walk refuses the body before the schema sees it."""
    deep = Contract("deep", {"put": Op(request=Struct({"v": ListOf(ListOf(Int()))}))})
    errors: list[str] = []

    async def client(proc: Process) -> None:
        try:
            await proc.send("out", "put", {"v": [[1]]})
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)

    async with capkern.boot(paging=False, limits=capkern.Limits(max_depth=2)) as k:
        ep = k.new_endpoint("deep", deep)
        assert (await k.wait(k.spawn(client, caps={"out": Grant(ep, "w")}))).ok
    assert errors == [NestingTooDeep.__name__]
