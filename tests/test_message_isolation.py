"""No object crosses a domain boundary: a receiver's message body is decoded from the
bytes the sender's trap encoded, so neither side can reach the other's objects --
whether the message is a send, a call, a contract-checked call or a reply (the kernel
delivers its in-flight message object itself when there are no capabilities to move, so
these pin down that this shares nothing)."""

from __future__ import annotations

from typing import Any

import trio

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, ListOf, Op, Struct

LISTS = Contract("lists", {"put": Op(request=Struct({"xs": ListOf(Int())}),
                                     reply=Struct({"xs": ListOf(Int())}))})


async def _finish(k: capkern.Kernel, pid: int) -> None:
    status = await k.wait(pid)
    assert status.ok, status


async def test_bodies_are_fresh_objects_both_ways(bare_kernel: capkern.Kernel) -> None:
    """Each side mutates what it sent after the other side got it: the other side's
    copy does not change, and no received object is one the other side holds."""
    seen: dict[str, Any] = {}
    handed_over = trio.Event()
    mutated = trio.Event()

    async def server(proc: Process) -> None:
        for _ in range(2):  # once uncontracted, once through the contract
            msg = await proc.recv("service")
            body = msg.body
            seen.setdefault("server_got", []).append(body)
            answer = {"xs": [7, 8]}
            seen.setdefault("server_sent", []).append(answer)
            proc.reply("ok", answer)
            answer["xs"].append(666)  # after the reply: the caller must not see it
            body["xs"].append(999)  # the caller's own object must not change

    async def client(proc: Process) -> None:
        for slot in ("plain", "typed"):
            mine = {"xs": [1, 2]}
            got = (await proc.call(slot, "put", mine)).ok()
            assert mine == {"xs": [1, 2]}, "the server reached the caller's object"
            assert got == {"xs": [7, 8]}, "the caller sees the server's later change"
            seen.setdefault("client_got", []).append(got)
            mine["xs"].append(5)
        handed_over.set()
        await mutated.wait()

    k = bare_kernel
    plain = k.new_endpoint("plain")
    typed = k.new_endpoint("typed", contract=LISTS)
    for ep in (plain, typed):
        k.spawn(server, caps={"service": Grant(ep, "r")})
    cli = k.spawn(client, caps={"plain": Grant(plain, "w"), "typed": Grant(typed, "w")})
    await handed_over.wait()
    assert [b["xs"] for b in seen["server_got"]] == [[1, 2, 999], [1, 2, 999]]
    for sent, got in zip(seen["server_sent"], seen["client_got"], strict=True):
        assert sent is not got and sent["xs"] is not got["xs"]
    mutated.set()
    await _finish(k, cli)


async def test_each_delivery_is_its_own_object(bare_kernel: capkern.Kernel) -> None:
    """Two sends of one body arrive as two distinct messages with distinct bodies."""
    got: list[Any] = []

    async def receiver(proc: Process) -> None:
        for _ in range(2):
            got.append(await proc.recv("in"))

    async def sender(proc: Process) -> None:
        body = {"n": [1]}
        await proc.send("out", "note", body)
        await proc.send("out", "note", body)

    k = bare_kernel
    ep = k.new_endpoint()
    rcv = k.spawn(receiver, caps={"in": Grant(ep, "r")})
    await _finish(k, k.spawn(sender, caps={"out": Grant(ep, "w")}))
    await _finish(k, rcv)
    first, second = got
    assert first is not second and first.body is not second.body
    assert first.body == second.body == {"n": [1]}
