"""A program's own schema node never holds the object its receiver gets.

A program may bind an endpoint it creates to a contract with its own ``Spec`` nodes;
their ``valid`` runs at the kernel's trap, on the value the kernel decoded to test the
message.  That value must not then be delivered as the receiver's body: the node's code
could keep it and change it after delivery, so two domains would share one Python object
(a server changing the reply its caller already checked; an endpoint's creator changing
requests delivered to the server it handed the receive right to).
"""

from __future__ import annotations

from typing import Any

import trio

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Op, Spec, Struct


class Stash(Spec):
    """An attacker's schema node: accepts anything and keeps what it was shown."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def valid(self, value: Any) -> bool:
        self.kept.append(value)
        return True

    def check(self, value: Any, path: str) -> None:
        return None


async def test_a_server_cannot_change_the_reply_its_caller_holds() -> None:
    stash = Stash()
    contract = Contract("evil", {"get": Op(Struct({}), Struct({"v": stash})),
                                 "raw": Op(Struct({}), Struct({"v": stash}))})
    got: list[Any] = []

    async def server(proc: Process) -> None:
        ep = proc.new_endpoint("evil", contract)
        await proc.send("registry", "here", caps=[proc.copy(ep, "w")])
        await proc.recv(ep)
        proc.reply("ok", {"v": {"balance": 10}})
        await proc.recv(ep)
        proc.reply_raw("ok", _raw({"v": {"balance": 10}}))
        await proc.recv(ep)  # the caller has both replies: now change them
        for kept in stash.kept:
            kept["balance"] = 1_000_000
        proc.reply("ok", {"v": 0})

    async def client(proc: Process) -> None:
        msg = await proc.recv("registry")
        ep = msg.caps[0]
        for label in ("get", "raw"):
            reply = await proc.call(ep, label, {})
            got.append(reply.body)
        await proc.call(ep, "get", {})
        await trio.lowlevel.checkpoint()

    async with capkern.boot(paging=False) as k:
        registry = k.new_endpoint("registry")
        k.spawn(server, caps={"registry": Grant(registry, "wg")})
        status = await k.wait(k.spawn(client, caps={"registry": Grant(registry, "rg")}))
        assert status.ok, status
    assert len(stash.kept) >= 2  # the attack ran
    assert got == [{"v": {"balance": 10}}, {"v": {"balance": 10}}]


def _raw(body: Any) -> bytes:
    import msgpack

    return msgpack.packb(body, use_bin_type=True)


async def test_an_endpoints_creator_cannot_change_requests_its_server_got() -> None:
    stash = Stash()
    contract = Contract("evil", {"put": Op(Struct({"v": stash}), oneway=True)})
    got: list[Any] = []
    done = trio.Event()

    async def creator(proc: Process) -> None:
        ep = proc.new_endpoint("evil", contract)
        await proc.send("serve", "serve", caps=[proc.copy(ep, "r")])
        await proc.send("use", "use", caps=[proc.copy(ep, "w")])
        await done.wait()
        for kept in stash.kept:
            kept["amount"] = -1

    async def victim_server(proc: Process) -> None:
        ep = (await proc.recv("registry")).caps[0]
        for _ in range(2):
            got.append((await proc.recv(ep)).body)
        done.set()
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    async def client(proc: Process) -> None:
        ep = (await proc.recv("registry")).caps[0]
        await proc.send(ep, "put", {"v": {"amount": 5}})
        await proc.send_raw(ep, "put", _raw({"v": {"amount": 5}}))

    async with capkern.boot(paging=False) as k:
        serve, use = k.new_endpoint("serve"), k.new_endpoint("use")
        k.spawn(creator, caps={"serve": Grant(serve, "wg"), "use": Grant(use, "wg")})
        server = k.spawn(victim_server, caps={"registry": Grant(serve, "rg")})
        c = k.spawn(client, caps={"registry": Grant(use, "rg")})
        assert (await k.wait(c)).ok
        assert (await k.wait(server)).ok
    assert len(stash.kept) == 2
    assert got == [{"v": {"amount": 5}}, {"v": {"amount": 5}}]
