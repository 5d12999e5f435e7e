"""The queued IPC path (:mod:`capkern._queue`): a send or call that finds no receiver
waits on the endpoint, paying its ``queued`` quota, until a receiver takes it.  Taken,
its quota is released and the receiver gets a fresh body; a call is then answered
through the reply object made when it was taken.  Withdrawn -- cancelled, or its
capability removed -- the message is never delivered and the quota comes back."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import capkern
from capkern import Grant, Process
from capkern._queue import QueuedSender
from capkern._quota import Quota, Usage


def _endpoint(k: capkern.Kernel, ep: Any) -> Any:
    return k.root.cspace.lookup(ep.slot).obj


def _queued(k: capkern.Kernel, pid: int) -> int:
    return next(d.usage for d in k.domains() if d.pid == pid)["queued"][0]


def test_usage_queue_charges_one_and_refuses_past_the_limit() -> None:
    use = Usage(Quota(queued=2), owner="p")
    use.queue()
    use.queue()
    with pytest.raises(capkern.QuotaExceeded) as info:
        use.queue()
    assert info.value.resource == "queued" and use.queued == 2  # refused: nothing changed
    use.unqueue()
    assert use.queued == 1
    use.unqueue()
    use.unqueue()  # never below zero
    assert use.queued == 0


async def test_a_queued_call_is_charged_then_answered_through_the_reply_made_when_taken(
        autojump_clock: trio.abc.Clock) -> None:
    sent = {"pages": [1, 2, 3], "tag": "t"}
    answers: list[Any] = []
    received: list[Any] = []
    go = trio.Event()

    async def client(proc: Process) -> None:
        answers.append((await proc.call("s", "get", sent)).body)

    async def server(proc: Process) -> None:
        await go.wait()  # busy: the call queues meanwhile
        msg = await proc.recv("service")
        received.append(msg.body)
        assert proc.reply("ok", {"echo": msg.body})

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("svc")
        endpoint = _endpoint(k, ep)
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        cli = k.spawn(client, caps={"s": Grant(ep, "w")})
        await trio.sleep(1)
        [blocked] = endpoint.senders
        assert isinstance(blocked, QueuedSender) and blocked.want_reply
        assert blocked.reply is None  # not taken yet: no reply object
        assert _queued(k, cli) == 1  # the caller pays while it waits
        go.set()
        assert (await k.wait(srv)).ok
        assert not endpoint.senders and _queued(k, cli) == 0  # released when taken
        assert (await k.wait(cli)).ok
    assert received == [sent] and received[0] is not sent
    assert answers == [{"echo": sent}]


async def test_each_receiver_of_a_queued_message_gets_objects_of_its_own(
        autojump_clock: trio.abc.Clock) -> None:
    body = {"items": [[1, 2], [3]], "name": "x"}
    got: list[Any] = []

    async def sender(proc: Process) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(proc.send, "s", "m", body)

    async def receiver(proc: Process) -> None:
        for _ in range(2):
            got.append(await proc.recv("r"))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        s = k.spawn(sender, caps={"s": Grant(ep, "w")})
        await trio.sleep(1)
        assert len(_endpoint(k, ep).senders) == 2
        r = k.spawn(receiver, caps={"r": Grant(ep, "r")})
        assert (await k.wait(r)).ok and (await k.wait(s)).ok
    first, second = got
    assert first.body == second.body == body
    assert first.body is not body and second.body is not body
    assert first.body is not second.body
    assert first.body["items"] is not second.body["items"]
    assert first.caps == second.caps == ()


async def test_a_capability_sent_on_a_queued_message_is_moved_when_taken(
        autojump_clock: trio.abc.Clock) -> None:
    got: list[tuple[int, ...]] = []

    async def sender(proc: Process) -> None:
        gift = proc.new_notification()
        await proc.send("s", "gift", None, caps=[gift])

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("r")
        got.append(msg.caps)
        held = {info.slot: info for info in proc.caps()}
        assert held[msg.caps[0]].kind == "Notification"  # now in the receiver's CSpace

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        s = k.spawn(sender, caps={"s": Grant(ep, "wg")})
        await trio.sleep(1)
        r = k.spawn(receiver, caps={"r": Grant(ep, "r")})
        assert (await k.wait(r)).ok and (await k.wait(s)).ok
    assert len(got) == 1 and len(got[0]) == 1 and got[0][0] != 0


@pytest.mark.parametrize("call", [False, True])
async def test_cancelled_while_queued_withdraws_the_message_and_its_quota(
        call: bool, autojump_clock: trio.abc.Clock) -> None:
    received: list[str] = []

    async def impatient(proc: Process) -> None:
        with trio.move_on_after(1) as scope:
            if call:
                await proc.call("s", "withdrawn")
            else:
                await proc.send("s", "withdrawn")
        assert scope.cancelled_caught
        await trio.sleep(5)

    async def server(proc: Process) -> None:
        received.append((await proc.recv("r")).label)

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        endpoint = _endpoint(k, ep)
        pid = k.spawn(impatient, caps={"s": Grant(ep, "w")})
        await trio.sleep(0.5)
        assert len(endpoint.senders) == 1 and _queued(k, pid) == 1
        await trio.sleep(1)
        assert not endpoint.senders and _queued(k, pid) == 0
        srv = k.spawn(server, caps={"r": Grant(ep, "r")})
        k.spawn(lambda p: p.send("s", "next"), caps={"s": Grant(ep, "w")})
        assert (await k.wait(srv)).ok
        assert (await k.wait(pid)).ok
    assert received == ["next"]


async def test_a_caller_cancelled_after_its_call_was_taken_drops_the_late_reply(
        autojump_clock: trio.abc.Clock) -> None:
    replied: list[bool] = []
    go = trio.Event()

    async def impatient(proc: Process) -> None:
        with trio.move_on_after(2) as scope:
            await proc.call("s", "slow")
        assert scope.cancelled_caught

    async def server(proc: Process) -> None:
        await go.wait()
        await proc.recv("r")  # taken off the queue: the caller now waits for the reply
        await trio.sleep(5)  # ...past its deadline
        replied.append(proc.reply("ok", "late"))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"r": Grant(ep, "r")})
        pid = k.spawn(impatient, caps={"s": Grant(ep, "w")})
        await trio.sleep(1)
        go.set()
        assert (await k.wait(pid)).ok
        assert (await k.wait(srv)).ok
        assert _queued(k, pid) == 0
    assert replied == [False]


@pytest.mark.parametrize("call", [False, True])
async def test_revoked_while_queued_fails_the_sender_and_releases_its_quota(
        call: bool, autojump_clock: trio.abc.Clock) -> None:
    saw: list[str] = []

    async def sender(proc: Process) -> None:
        try:
            await (proc.call if call else proc.send)("s", "x", 1)
            saw.append("delivered")
        except capkern.CapabilityRevoked:
            saw.append("revoked")
        await trio.sleep(5)

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        badged = k.mint(ep, "w", badge=3)
        endpoint = _endpoint(k, ep)
        pid = k.spawn(sender, caps={"s": Grant(badged, "w")})
        await trio.sleep(1)
        assert _queued(k, pid) == 1
        await k.revoke(badged)
        await trio.sleep(1)
        assert saw == ["revoked"]
        assert not endpoint.senders and _queued(k, pid) == 0
        assert (await k.wait(pid)).ok
