"""ReplyRecv (seL4): ``Process.reply_recv`` answers the current caller and receives the
next message in one trap, and the server loop steps with it.  The reply is made when
the trap is called: a refused one raises its typed error there, before any receive, and
the reply capability stays with the server (it may answer again) -- as ``reply`` then
``recv`` did.  A port whose ``reply_recv`` is a coroutine (it replies only when awaited)
is served with a reply, then a receive, so a refusal is still contained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from capkern import Grant, Kernel, Process
from capkern import _serverloop as serverloop
from capkern._contract import Contract, Int, Op, Struct
from capkern.errors import CapkernError, ContractViolation, ReplyError, ReplyRefused

DOUBLER = Contract("doubler", {"double": Op(Struct({"n": Int()}), Struct({"n": Int(0, 100)}))})


async def test_a_refused_reply_raises_at_the_trap_and_keeps_the_capability(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    steps: list[str] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        step = None
        with pytest.raises(ContractViolation):
            step = proc.reply_recv("service", "ok", {"n": 1000})  # out of contract
        assert step is None  # raised when called: no receive was started
        steps.append("refused")
        msg = await proc.reply_recv("service", "ok", {"n": msg.body["n"] * 2})  # again
        steps.append("answered")
        proc.reply("ok", {"n": msg.body["n"] * 2})

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "double", {"n": 4})).ok() == {"n": 8}
        assert (await proc.call("s", "double", {"n": 5})).ok() == {"n": 10}

    k = bare_kernel
    ep = k.new_endpoint("doubler", contract=DOUBLER)
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert status.ok, status
    assert (await k.wait(srv)).ok
    assert steps == ["refused", "answered"]


async def test_reply_recv_with_no_caller_only_receives(bare_kernel: Kernel) -> None:
    async def server(proc: Process) -> None:
        msg = await proc.reply_recv("service", "ok", "nobody asked")  # no caller yet
        with pytest.raises(ReplyError):
            proc.reply("ok", "twice")  # the message was a send: nobody to answer
        assert msg.body == "hello"

    async def client(proc: Process) -> None:
        await proc.send("s", "greet", "hello")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
    assert (await k.wait(srv)).ok


async def test_the_server_loop_refusal_through_reply_recv_is_contained(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    refused: list[str] = []

    async def double(body: Any) -> Any:
        return {"n": body["n"] * 2}

    async def server(proc: Process) -> None:
        await serverloop.serve(proc, {"double": double},
                               on_refused=lambda exc: refused.append(type(exc).__name__))

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "double", {"n": 3})).ok() == {"n": 6}
        with pytest.raises(ReplyRefused):  # 200 > 100: refused, the server receives on
            await proc.call("s", "double", {"n": 100})
        assert (await proc.call("s", "double", {"n": 7})).ok() == {"n": 14}

    k = bare_kernel
    ep = k.new_endpoint("doubler", contract=DOUBLER)
    k.spawn(server, caps={"service": Grant(ep, "r")})
    status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert status.ok, status
    assert refused == ["ContractViolation"]


@dataclass
class _Req:
    label: str
    body: Any


class _Stop(Exception):
    pass


class AsyncReplyRecvPort:
    """A port whose ``reply_recv`` replies only when awaited (as a socket's would)."""

    def __init__(self, *requests: _Req) -> None:
        self.requests = list(requests)
        self.answers: list[Any] = []
        self.combined = 0

    async def recv(self, slot: int | str) -> _Req:
        if not self.requests:
            raise _Stop
        return self.requests.pop(0)

    def reply(self, label: str = "ok", body: Any = None) -> bool:
        if body == {"n": -2}:
            raise ContractViolation("negative")
        self.answers.append(body)
        return True

    def reply_error(self, reason: str, detail: str = "") -> bool:
        return self.reply("error", {"reason": reason, "detail": detail})

    async def reply_recv(self, slot: int | str, label: str = "ok", body: Any = None) -> _Req:
        self.combined += 1
        self.reply(label, body)
        return await self.recv(slot)


async def test_a_port_with_a_coroutine_reply_recv_is_served_reply_then_recv() -> None:
    async def double(body: Any) -> Any:
        return {"n": body["n"] * 2}

    refused: list[CapkernError] = []
    port = AsyncReplyRecvPort(_Req("double", {"n": 1}), _Req("double", {"n": -1}),
                              _Req("double", {"n": 3}))
    with pytest.raises(_Stop):
        await serverloop.serve(port, {"double": double}, on_refused=refused.append)
    assert port.combined == 0  # its reply_recv would raise a refusal at the await
    assert port.answers == [{"n": 2}, {"n": 6}]
    assert [type(e) for e in refused] == [ContractViolation]
