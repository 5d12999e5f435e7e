"""A body's own code, run while the kernel packs it, cannot corrupt another message.

A body sent on an endpoint with a closed schema is packed without a walk of its shape
first, so a container subclass in it (a ``dict`` whose ``items()`` is the sender's code)
runs inside the kernel's msgpack packer.  If that code sends or replies meanwhile, the
nested message is packed too: it must get bytes of its own, not the half-packed outer
body's buffer -- else a server could make its caller's kernel deliver malformed bytes and
the caller fail decoding them with an untyped msgpack error.  The nested message arrives
intact (or is refused with a typed error); the outer one is refused or delivered as what
its bytes say, never anything in between."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, Op, Struct

OWN = Contract("own", {"put": Op(Struct({"v": Int()}), oneway=True)})
SVC = Contract("svc", {"get": Op(Struct({}), Struct({"x": Int()}), errors=frozenset({"no"}))})


@pytest.mark.parametrize("contract", [None, SVC], ids=["no-contract", "closed-schema"])
@pytest.mark.parametrize("how", ["reply", "reply_error"])
async def test_a_reply_sent_from_inside_the_packer_arrives_intact(
        contract: Contract | None, how: str, capkern_clock: trio.testing.MockClock) -> None:
    got: list[Any] = []
    outer: list[str] = []

    async def evil(proc: Process) -> None:
        own = proc.new_endpoint("own", OWN)
        svc = proc.new_endpoint("svc", contract)
        await proc.send("registry", "here", caps=[proc.copy(svc, "w")])
        await proc.recv(svc)  # the victim's call: answered from inside the packer

        class Hook(dict[str, Any]):
            def items(self) -> Any:
                if how == "reply":
                    proc.reply("ok", {"x": 7})
                else:
                    proc.reply_error("no", "refused")
                return super().items()

        with trio.move_on_after(1):  # nobody receives on its own endpoint
            try:
                await proc.send(own, "put", Hook(v=1))
                outer.append("sent")
            except capkern.CapkernError as exc:
                outer.append(type(exc).__name__)

    async def victim(proc: Process) -> None:
        ep = (await proc.recv("registry")).caps[0]
        msg = await proc.call(ep, "get", {})
        got.append((msg.label, msg.body))

    async with capkern.boot(paging=False) as k:
        registry = k.new_endpoint("registry")
        k.spawn(evil, caps={"registry": Grant(registry, "wg")})
        status = await k.wait(k.spawn(victim, caps={"registry": Grant(registry, "rg")}))
        assert status.ok, status
    want = ("ok", {"x": 7}) if how == "reply" else ("error", {"reason": "no", "detail": "refused"})
    assert got == [want]
    assert outer in ([], ["UnencodableBody"])  # blocked (no receiver), or refused
