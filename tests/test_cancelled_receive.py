"""A receive by a task that is already cancelled takes nothing and leaves nothing behind:
not a queued message (it stays for the next receiver), not a registration as a waiting
receiver (a later send must not be handed to a task that has gone), and a refused reply's
caller is not given up by a receive that never happened.

The receive checks for cancellation only where it is about to change something; when it
blocks at once, trio delivers the pending cancellation as it blocks and IPC's abort
callback withdraws it.  These tests pin both paths down."""

from __future__ import annotations

import trio
import trio.testing

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, Op, Struct
from capkern.errors import ContractViolation, ReplyRefused


async def _finish(k: capkern.Kernel, pid: int) -> None:
    status = await k.wait(pid)
    assert status.ok, status


async def test_cancelled_receive_with_nothing_queued_registers_no_receiver(
        bare_kernel: capkern.Kernel) -> None:
    outcome: list[str] = []

    async def receiver(proc: Process) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.recv("service")
            outcome.append("received")
        outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")
        # nobody waits on the endpoint now: a non-blocking send finds no receiver
        outcome.append("delivered" if proc.nbsend("out", "ping") else "dropped")

    k = bare_kernel
    ep = k.new_endpoint()
    await _finish(k, k.spawn(receiver, caps={"service": Grant(ep, "r"),
                                             "out": Grant(ep, "w")}))
    assert outcome == ["cancelled", "dropped"]
    assert k.stats.ipc_sends == 0


async def test_cancelled_receive_leaves_a_queued_message_for_the_next_receiver(
        bare_kernel: capkern.Kernel) -> None:
    got: list[object] = []

    async def sender(proc: Process) -> None:
        await proc.send("out", "note", 7)

    async def receivers(proc: Process) -> None:
        await trio.testing.wait_all_tasks_blocked()  # the sender is queued by now
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.recv("service")
        assert scope.cancelled_caught
        msg = await proc.recv("service")  # the message is still there
        got.append((msg.label, msg.body))

    k = bare_kernel
    ep = k.new_endpoint()
    snd = k.spawn(sender, caps={"out": Grant(ep, "w")})
    await _finish(k, k.spawn(receivers, caps={"service": Grant(ep, "r")}))
    await _finish(k, snd)
    assert got == [("note", 7)]


SMALL = Contract("small", {"get": Op(request=Struct({}), reply=Struct({"n": Int(0, 10)}))})


async def test_cancelled_receive_does_not_give_up_a_refused_replys_caller(
        bare_kernel: capkern.Kernel) -> None:
    """A refused reply leaves the caller waiting for a second answer; a receive that is
    cancelled before it starts must not abort that caller (a real receive would)."""
    seen: list[str] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        try:
            proc.reply("ok", {"n": 99})  # out of contract: refused, the caller still waits
        except ContractViolation:
            seen.append("refused")
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.recv("service")
        assert scope.cancelled_caught
        proc.reply("ok", {"n": 3})  # the caller is still there to be answered
        # a real receive now, with the reply refused again, gives the caller up
        await proc.recv("service")
        try:
            proc.reply("ok", {"n": 99})
        except ContractViolation:
            seen.append("refused again")
        await proc.recv("service")

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "get", {})).ok() == {"n": 3}
        try:
            await proc.call("s", "get", {})
        except ReplyRefused:
            seen.append("caller told")

    k = bare_kernel
    ep = k.new_endpoint("small", contract=SMALL)
    k.spawn(server, caps={"service": Grant(ep, "r")})
    await _finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert seen == ["refused", "refused again", "caller told"]
