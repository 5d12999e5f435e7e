"""A message that waits in an endpoint's queue (no receiver yet) is held as its bytes
only, and decoded when a receiver takes it: a blocked sender pins its encoded body, not
also the decoded objects (which can be several times larger), and the receiver still
gets a fresh body of its own -- not the value the sender's trap tested."""

from __future__ import annotations

import trio

import capkern
from capkern import Grant, Process
from capkern._ipc import UNDECODED


async def test_a_queued_message_waits_as_bytes_and_arrives_decoded() -> None:
    seen: dict[str, object] = {}
    sent = {"items": list(range(300)), "tag": "x"}

    async with capkern.boot(paging=False) as kernel:
        ep = kernel.new_endpoint("q")

        async def sender(proc: Process) -> None:
            await proc.send("ep", "m", sent)

        async def receiver(proc: Process) -> None:
            msg = await proc.recv("ep")
            seen["body"] = msg.body

        spid = kernel.spawn(sender, name="sender", caps={"ep": Grant(ep, "w")})
        await trio.testing.wait_all_tasks_blocked()
        endpoint = kernel.root.cspace.lookup(ep.slot).obj
        queued = [blocked.msg for blocked in endpoint.senders]  # type: ignore[attr-defined]
        assert len(queued) == 1
        assert queued[0].body is UNDECODED  # only the bytes wait
        assert len(queued[0]._raw) > 300
        rpid = kernel.spawn(receiver, name="receiver", caps={"ep": Grant(ep, "r")})
        assert (await kernel.wait(spid)).ok
        assert (await kernel.wait(rpid)).ok
    assert seen["body"] == sent
    assert seen["body"] is not sent


async def test_a_queued_call_to_a_contracted_server_is_decoded_when_taken() -> None:
    async with capkern.boot(paging=False) as kernel:
        ep = kernel.new_endpoint("echo")
        client_done = trio.Event()
        answers: list[object] = []

        async def client(proc: Process) -> None:
            got = await proc.call("ep", "ping", {"n": [1, 2, 3]})
            answers.append(got.body)
            client_done.set()

        async def server(proc: Process) -> None:
            msg = await proc.recv("ep")
            proc.reply("ok", {"echo": msg.body})

        kernel.spawn(client, name="client", caps={"ep": Grant(ep, "w")})
        await trio.testing.wait_all_tasks_blocked()
        kernel.spawn(server, name="server", caps={"ep": Grant(ep, "r")})
        await client_done.wait()
    assert answers == [{"echo": {"n": [1, 2, 3]}}]
