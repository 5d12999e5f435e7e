"""A message's label is plain data checked at the trap, like its body.

A label crosses domains as a ``str`` and nothing else: a sender's label that is not a
``str`` is refused (:class:`~capkern.errors.MalformedMessage`, counted) whichever path
checks it -- the fast path for ``ok`` replies to a closed schema included, which must
refuse exactly what the full check refuses -- and a ``str`` subclass arrives as a plain
``str`` equal to it, so the receiver never holds (or runs the methods of) an object the
sender made.
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, Op, Str, Struct
from capkern.errors import MalformedMessage

CLOSED = Contract("svc", {"get": Op(Struct({"n": Int(0, 9)}), Struct({"v": Int(0, 99)}),
                                    errors=frozenset({"nope"}))})


class LooksLikeOk:
    """Not a str, but equal to every label and hashable like one."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("ok")

    def __len__(self) -> int:
        return 2


class Label(str):
    """A program's own str subclass (its methods would run wherever the object went)."""

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)

    def __hash__(self) -> int:
        return str.__hash__(self)


async def _serve_once(contract: Contract | None, answer: Any) -> tuple[list[str], Any, int]:
    """A server answering one call with ``answer(proc)``; returns what the server saw
    (typed errors by name), the caller's received message, and messages rejected."""
    seen: list[str] = []
    got: list[Any] = []

    async def server(proc: Process) -> None:
        ep = proc.new_endpoint("svc", contract)
        await proc.send("registry", "here", caps=[proc.copy(ep, "w")])
        await proc.recv(ep)
        try:
            answer(proc)
            seen.append("accepted")
        except MalformedMessage:
            seen.append("MalformedMessage")
            proc.reply("ok", {"v": 1})

    async def client(proc: Process) -> None:
        msg = await proc.recv("registry")
        got.append(await proc.call(msg.caps[0], "get", {"n": 1}))

    async with capkern.boot(paging=False) as k:
        registry = k.new_endpoint("registry")
        k.spawn(server, caps={"registry": Grant(registry, "wg")})
        status = await k.wait(k.spawn(client, caps={"registry": Grant(registry, "rg")}))
        assert status.ok, status
        rejected = k.stats.messages_rejected
    return seen, got[0], rejected


@pytest.mark.parametrize("contract", [CLOSED, None], ids=["closed-schema", "no-contract"])
async def test_a_reply_label_that_is_not_a_str_is_refused(contract: Contract | None) -> None:
    seen, msg, rejected = await _serve_once(
        contract, lambda proc: proc.reply(LooksLikeOk(), {"v": 5}))
    assert seen == ["MalformedMessage"]
    assert rejected == 1
    assert (msg.label, msg.body) == ("ok", {"v": 1})  # the server's second answer


@pytest.mark.parametrize("contract", [CLOSED, None], ids=["closed-schema", "no-contract"])
@pytest.mark.parametrize(("label", "body"), [
    ("ok", {"v": 5}), ("error", {"reason": "nope", "detail": ""})])
async def test_a_reply_label_arrives_as_a_plain_str(
        contract: Contract | None, label: str, body: Any) -> None:
    seen, msg, _rejected = await _serve_once(contract, lambda proc: proc.reply(Label(label), body))
    assert seen == ["accepted"]
    assert type(msg.label) is str
    assert msg.label == label


async def test_a_request_label_arrives_as_a_plain_str() -> None:
    labels: list[Any] = []
    refused: list[str] = []
    contract = Contract("svc", {"put": Op(Struct({"s": Str(8)}), oneway=True)})

    async def server(proc: Process) -> None:
        ep = proc.new_endpoint("svc", contract)
        plain = proc.new_endpoint("plain")
        await proc.send("registry", "here", caps=[proc.copy(ep, "w"), proc.copy(plain, "w")])
        labels.append((await proc.recv(ep)).label)
        labels.append((await proc.recv(plain)).label)

    async def client(proc: Process) -> None:
        msg = await proc.recv("registry")
        await proc.send(msg.caps[0], Label("put"), {"s": "x"})
        await proc.send(msg.caps[1], Label("anything"), None)
        try:
            await proc.send(msg.caps[1], LooksLikeOk(), None)  # type: ignore[arg-type]
        except MalformedMessage:
            refused.append("refused")

    async with capkern.boot(paging=False) as k:
        registry = k.new_endpoint("registry")
        server_pid = k.spawn(server, caps={"registry": Grant(registry, "wg")})
        status = await k.wait(k.spawn(client, caps={"registry": Grant(registry, "rg")}))
        assert status.ok, status
        assert (await k.wait(server_pid)).ok
    assert [type(x) for x in labels] == [str, str]
    assert labels == ["put", "anything"]
    assert refused == ["refused"]
