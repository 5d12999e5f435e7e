"""A call's reply object wakes both ends of the call: it carries the request to the
server it hands the call to, then the answer to the caller, each taken once by
``unwrap`` (it stands in for an ``outcome.Value``).  It never holds a message once taken:
a server that saved the caller keeps no reference to the request through it."""

from __future__ import annotations

import outcome
import pytest
import trio
import trio.testing

from capkern import Grant, Kernel, Process
from capkern._ipc import ReplyObject
from capkern._message import Message


def test_unwrap_takes_what_it_carries_once() -> None:
    reply = ReplyObject(None, None, "x", None, False)  # type: ignore[arg-type]
    with pytest.raises(outcome.AlreadyUsedError):
        reply.unwrap()  # carries nothing yet
    msg = Message("x", b"\x01", 1, 0, ())
    reply.carried = msg
    assert reply.unwrap() is msg
    assert reply.carried is None
    with pytest.raises(outcome.AlreadyUsedError):
        reply.unwrap()


async def test_each_end_gets_its_own_message_and_nothing_stays_pinned(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    held: list[ReplyObject] = []

    async def server(proc: Process) -> None:
        for i in range(3):
            msg = await proc.recv("service")
            slot = proc.save_caller()
            reply = proc._dom.cspace.lookup(slot).obj
            assert isinstance(reply, ReplyObject)
            assert reply.carried is None  # the request was taken: not held through it
            held.append(reply)
            proc.reply_to(slot, "ok", {"got": msg.body, "i": i})

    async def client(proc: Process) -> None:
        for i in range(3):
            assert (await proc.call("s", "x", f"req{i}")).body == {"got": f"req{i}", "i": i}

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
    assert (await k.wait(srv)).ok
    assert len(held) == 3 and all(r.carried is None for r in held)  # answers taken too
