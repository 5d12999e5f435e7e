"""Messages a closed schema tests are encoded without the shape walk, and refused the same.

On a contracted endpoint whose schema is made only of built-in nodes (no ``Any_``), a
body is packed without walking it first: the schema, testing the decoded value, refuses
whatever the walk would.  A refused body is walked then, so every bad body still gets the
wire-level error it gets on an endpoint without a contract (``NestingTooDeep``,
``UnencodableBody``, ``MessageTooLarge``), at the sender's trap for a request and the
replier's for a reply; the server keeps serving and the caller keeps working.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

import capkern
from capkern import Grant, Limits, Process
from capkern._contract import Contract, Int, ListOf, Op, Struct, closed

ECHO = Contract("echo", {"put": Op(Struct({"v": ListOf(Int())}), Struct({"v": ListOf(Int())}))})


def _deep(depth: int) -> Any:
    body: Any = 0
    for _ in range(depth):
        body = [body]
    return body


BAD_BODIES: dict[str, tuple[type[Exception], Any]] = {
    "deep": (capkern.NestingTooDeep, _deep(100)),
    "deep-in-field": (capkern.NestingTooDeep, {"v": _deep(100)}),
    "very-deep": (capkern.NestingTooDeep, _deep(600)),  # past msgpack's own limit
    "object": (capkern.UnencodableBody, {"v": [object()]}),
    "set": (capkern.UnencodableBody, {"v": {1, 2}}),
    "bad-key": (capkern.UnencodableBody, {(1, 2): [3]}),
    "huge-int": (capkern.UnencodableBody, {"v": [1 << 80]}),
    "oversized": (capkern.MessageTooLarge, {"v": list(range(1000))}),
    "out-of-contract": (capkern.ContractViolation, {"v": ["x"]}),
}


def test_the_schemas_here_and_the_system_ones_are_closed() -> None:
    from capkern._protocols import BLOCKDEV, CRYPT, PAGER

    assert closed(ECHO.ops["put"].request) and closed(ECHO.ops["put"].reply)
    assert ECHO.closed_request("put") and ECHO.closed_reply("put", "ok")
    assert ECHO.closed_reply("put", "error") and not ECHO.closed_reply("put", "other")
    assert PAGER.closed_request("fetch") and CRYPT.closed_reply("unseal", "ok")
    assert not PAGER.closed_reply("stats", "ok")  # Any_: walked as before
    assert BLOCKDEV.closed_request("read")


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_a_bad_request_gets_its_wire_error_at_the_senders_trap(case: str) -> None:
    expected, body = BAD_BODIES[case]
    seen: list[Any] = []

    async def server(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            seen.append(msg.body)
            proc.reply("ok", msg.body)

    async def client(proc: Process) -> None:
        with pytest.raises(expected):
            await proc.call("s", "put", body)
        assert (await proc.call("s", "put", {"v": [1, 2]})).body == {"v": [1, 2]}

    async with capkern.boot(paging=False, limits=Limits(max_body_bytes=1024)) as k:
        ep = k.new_endpoint("echo", ECHO)
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert seen == [{"v": [1, 2]}]  # the server never saw the bad one


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_a_bad_reply_gets_its_wire_error_at_the_repliers_trap(case: str) -> None:
    expected, body = BAD_BODIES[case]
    refused: list[type[Exception]] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        try:
            proc.reply("ok", body)
        except capkern.CapkernError as exc:
            refused.append(type(exc))
        proc.reply("ok", {"v": [7]})  # the reply capability is still usable

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "put", {"v": []})).body == {"v": [7]}

    async with capkern.boot(paging=False, limits=Limits(max_body_bytes=1024)) as k:
        ep = k.new_endpoint("echo", ECHO)
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
    assert len(refused) == 1 and issubclass(refused[0], expected), refused


async def test_a_container_subclass_arrives_as_plain_data() -> None:
    """Packed as the plain data it holds: the receiver gets a fresh dict and list."""

    class Tagged(list[int]):
        pass

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        assert type(msg.body) is dict and type(msg.body["v"]) is list
        proc.reply("ok", OrderedDict(v=Tagged([3])))

    async def client(proc: Process) -> None:
        got = (await proc.call("s", "put", OrderedDict(v=Tagged([1])))).body
        assert got == {"v": [3]} and type(got) is dict and type(got["v"]) is list

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("echo", ECHO)
        k.spawn(server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert status.ok, status
