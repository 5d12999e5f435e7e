"""Endpoint IPC through the kernel's syscall surface: call/reply pairing and the one-shot
reply capability, send/nbsend rendezvous, capability transfer and revoke, rights and
forged slots, notifications, bad input at the boundary (each followed by a good request
the server must still serve) and the IPC trace.

Every domain is a spawned program that uses only its ``Process`` handle; the test body
plays the root (the code that booted the kernel).  Anything that waits on time runs on
pytest-trio's ``autojump_clock`` fixture, so no test sleeps for real.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Limits, Process, RootCap
from capkern._contract import Contract, Int, Op, Struct

from .helpers import start_echo

ADD = Contract(
    "svc",
    {"add": Op(Struct({"a": Int(), "b": Int()}), Struct({"sum": Int()}), frozenset({"overflow"}))},
)


# -- helpers ---------------------------------------------------------------------------


async def finish(k: capkern.Kernel, pid: int) -> capkern.ExitStatus:
    """Wait for ``pid`` and insist it ended cleanly (its assertion text if not)."""
    status = await k.wait(pid)
    assert status.ok, status
    return status






async def still_serves(proc: Process, slot: str = "s") -> None:
    got = await proc.call(slot, "ping", "still there?")
    assert got.body["body"] == "still there?"


# -- call / reply ------------------------------------------------------------------------


async def test_concurrent_clients_each_get_their_own_answer_and_badge() -> None:
    results: dict[int, list[Any]] = {}

    async def client(proc: Process, me: int) -> None:
        answers = []
        for i in range(15):
            got = await proc.call("s", "echo", {"who": me, "i": i})
            answers.append((got.label, got.body["body"], got.body["badge"]))
        results[me] = answers

    async with capkern.boot(paging=False) as k:
        ep = start_echo(k)
        pids = [
            k.spawn(client, badge, name=f"client{badge}", caps={"s": Grant(ep, "w", badge=badge)})
            for badge in (1, 2, 3, 4)
        ]
        assert len(set(pids)) == 4
        for pid in pids:
            await finish(k, pid)
    for badge in (1, 2, 3, 4):
        assert results[badge] == [("ok", {"who": badge, "i": i}, badge) for i in range(15)]


async def test_unbadged_caller_shows_badge_zero(bare_kernel: capkern.Kernel) -> None:
    async def client(proc: Process) -> None:
        got = await proc.call("s", "x", 1)
        assert got.body["badge"] == 0

    k = bare_kernel
    ep = start_echo(k)
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))


async def test_reply_capability_is_one_shot(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        assert proc.reply("ok", "first") is True
        with pytest.raises(capkern.ReplyError, match="server"):
            proc.reply("ok", "second")
        with pytest.raises(capkern.ReplyError):
            proc.reply_error("again")
        # the one-shot rule did not break the server: it serves the next call
        await proc.recv("service")
        assert proc.reply("ok", "next") is True

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "a")).body == "first"
        assert (await proc.call("s", "b")).body == "next"

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, name="server", caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


async def test_reply_with_no_caller_raises_reply_error(bare_kernel: capkern.Kernel) -> None:
    async def lonely(proc: Process) -> None:
        with pytest.raises(capkern.ReplyError, match="lonely"):
            proc.reply("ok", 1)
        with pytest.raises(capkern.ReplyError):
            proc.save_caller()
        # a plain send delivers no reply capability either
        await proc.recv("service")
        with pytest.raises(capkern.ReplyError):
            proc.reply("ok", 1)

    async def sender(proc: Process) -> None:
        await proc.send("s", "oneway", 1)

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(lonely, name="lonely", caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(sender, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


async def test_save_caller_then_reply_to_later_out_of_order() -> None:
    async def server(proc: Process) -> None:
        first = await proc.recv("service")
        saved_first = proc.save_caller("first")
        second = await proc.recv("service")  # no abort: the first reply cap was saved
        saved_second = proc.save_caller("second")
        kinds = {c.slot: c.kind for c in proc.caps()}
        assert kinds[saved_first] == kinds[saved_second] == "Reply"
        # answer in reverse order
        assert proc.reply_to(saved_second, "ok", f"re:{second.body}") is True
        assert proc.reply_to("first", "ok", f"re:{first.body}") is True
        with pytest.raises(capkern.EmptySlot):
            proc.reply_to(saved_second, "ok", "twice")
        with pytest.raises(capkern.EmptySlot):
            proc.reply_to("first", "ok", "twice")
        assert all(c.kind != "Reply" for c in proc.caps())

    got: dict[str, str] = {}

    async def client(proc: Process, tag: str) -> None:
        got[tag] = (await proc.call("s", "x", tag)).body

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        a = k.spawn(client, "A", caps={"s": Grant(ep, "w")})
        await trio.testing.wait_all_tasks_blocked()
        b = k.spawn(client, "B", caps={"s": Grant(ep, "w")})
        for pid in (a, b, srv):
            await finish(k, pid)
    assert got == {"A": "re:A", "B": "re:B"}


async def test_reply_to_needs_a_reply_capability(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        with pytest.raises(capkern.WrongObjectType):
            proc.reply_to("service", "ok", 1)

    k = bare_kernel
    ep = k.new_endpoint()
    await finish(k, k.spawn(server, caps={"service": Grant(ep, "rw")}))


async def test_reply_recv_answers_and_receives_next(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        for _ in range(5):
            msg = await proc.reply_recv("service", "ok", msg.body * 2)
        proc.reply("ok", -1)

    async def client(proc: Process) -> None:
        for i in range(6):
            expect = -1 if i == 5 else i * 2
            assert (await proc.call("s", "x", i)).body == expect

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


async def test_receiving_again_without_replying_aborts_the_old_caller() -> None:
    async def forgetful(proc: Process) -> None:
        await proc.recv("service")
        await proc.recv("service")  # drops the first caller's reply capability
        proc.reply("ok", "second gets an answer")

    outcomes: dict[str, str] = {}

    async def client(proc: Process, tag: str) -> None:
        try:
            outcomes[tag] = (await proc.call("s", "x")).body
        except capkern.CallAborted as exc:
            assert "forgetful" in str(exc)
            outcomes[tag] = "aborted"

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(forgetful, caps={"service": Grant(ep, "r")})
        first = k.spawn(client, "first", caps={"s": Grant(ep, "w")})
        await trio.testing.wait_all_tasks_blocked()
        second = k.spawn(client, "second", caps={"s": Grant(ep, "w")})
        for pid in (first, second, srv):
            await finish(k, pid)
    assert outcomes == {"first": "aborted", "second": "second gets an answer"}


@pytest.mark.parametrize("saved", [False, True], ids=["implicit", "saved"])
async def test_killed_server_holding_a_reply_aborts_the_call(
        saved: bool, autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    got_call = trio.Event()

    async def server(proc: Process) -> None:
        await proc.recv("service")
        if saved:
            proc.save_caller("held")
        got_call.set()
        await trio.sleep_forever()

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.CallAborted, match="without replying"):
            await proc.call("s", "x")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    cli = k.spawn(client, caps={"s": Grant(ep, "w")})
    await got_call.wait()
    k.kill(srv)
    with trio.fail_after(5):  # bounded: the caller must not hang
        await finish(k, cli)
    assert (await k.wait(srv)).state == "killed"


async def test_crashed_server_holding_a_reply_aborts_the_call(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        raise RuntimeError("server bug")

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.CallAborted):
            await proc.call("s", "x")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert (await k.wait(srv)).state == "failed"


async def test_cancelled_caller_reply_returns_false_and_server_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    replies: list[bool] = []
    caller_gone = trio.Event()

    async def server(proc: Process) -> None:
        await proc.recv("service")
        await caller_gone.wait()
        replies.append(proc.reply("ok", "too late"))
        # the server is fine and keeps serving
        msg = await proc.recv("service")
        replies.append(proc.reply("ok", msg.body))

    async def impatient(proc: Process) -> None:
        with trio.move_on_after(1) as scope:
            await proc.call("s", "slow")
        assert scope.cancelled_caught
        caller_gone.set()
        assert (await proc.call("s", "again", 7)).body == 7

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await finish(k, k.spawn(impatient, caps={"s": Grant(ep, "w")}))
        await finish(k, srv)
        assert k.stats.crashes == 0
    assert replies == [False, True]


async def test_cancelled_while_queued_leaves_the_queue(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    async def impatient(proc: Process) -> None:
        with trio.move_on_after(1):
            await proc.call("s", "never served")
            raise AssertionError("nobody was receiving")

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        assert msg.label == "real"
        proc.reply("ok", "served")

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "real")).body == "served"

    k = bare_kernel
    ep = k.new_endpoint()
    await finish(k, k.spawn(impatient, caps={"s": Grant(ep, "w")}))
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


# -- send / nbsend ---------------------------------------------------------------------------


async def test_send_blocks_until_received(autojump_clock: trio.abc.Clock) -> None:
    sent = trio.Event()
    got: list[Any] = []

    async def sender(proc: Process) -> None:
        await proc.send("out", "note", {"n": 1})
        sent.set()

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("in")
        got.append((msg.label, msg.body))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        snd = k.spawn(sender, caps={"out": Grant(ep, "w")})
        await trio.sleep(10)
        assert not sent.is_set()  # nobody received yet: the sender is blocked
        assert k.status(snd) is None
        await finish(k, k.spawn(receiver, caps={"in": Grant(ep, "r")}))
        await finish(k, snd)
        assert sent.is_set()
    assert got == [("note", {"n": 1})]


async def test_nbsend_drops_without_receiver_and_delivers_to_a_waiting_one() -> None:
    got: list[Any] = []

    async def receiver(proc: Process) -> None:
        got.append((await proc.recv("in")).body)

    async def early(proc: Process) -> None:
        assert proc.nbsend("out", "x", "dropped") is False

    async def late(proc: Process) -> None:
        assert proc.nbsend("out", "x", "delivered") is True

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        await finish(k, k.spawn(early, caps={"out": Grant(ep, "w")}))
        rcv = k.spawn(receiver, caps={"in": Grant(ep, "r")})
        await trio.testing.wait_all_tasks_blocked()
        await finish(k, k.spawn(late, caps={"out": Grant(ep, "w")}))
        await finish(k, rcv)
    assert got == ["delivered"]


# -- capability transfer -------------------------------------------------------------------


async def test_transfer_needs_grant_right(bare_kernel: capkern.Kernel) -> None:
    async def client(proc: Process) -> None:
        with pytest.raises(capkern.InsufficientRights, match="client"):
            await proc.send("s", "give", None, caps=["n"])
        with pytest.raises(capkern.InsufficientRights):
            await proc.call("s", "give", None, caps=["n"])
        with pytest.raises(capkern.InsufficientRights):
            proc.nbsend("s", "give", None, caps=["n"])
        await still_serves(proc)  # no-cap messages still go through

    k = bare_kernel
    ep = start_echo(k)
    n = k.new_notification("n")
    pid = k.spawn(client, name="client", caps={"s": Grant(ep, "w"), "n": n})
    await finish(k, pid)
    assert k.stats.caps_transferred == 0


async def test_transferred_cap_lands_in_receiver_and_dies_with_root_revoke(
        bare_kernel: capkern.Kernel) -> None:
    received = trio.Event()
    revoked = trio.Event()
    info: dict[str, Any] = {}

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("in")
        (slot,) = msg.caps
        assert slot > 0
        info["slot"] = slot
        info["label"] = msg.label
        # derived from the sender's capability, in the receiver's own CSpace
        mine = {c.slot: c for c in proc.caps()}
        info["parent_seen"] = mine[slot].parent
        proc.signal(slot)  # usable: it names the notification
        proc.name_slot(slot, "gift")
        received.set()
        await revoked.wait()
        with pytest.raises(capkern.EmptySlot):
            proc.signal(slot)
        with pytest.raises(capkern.EmptySlot):
            proc.signal("gift")

    async def giver(proc: Process) -> None:
        info["giver"] = (proc.pid, proc.slot("n"))
        await proc.send("out", "here", None, caps=["n"])
        # the sender keeps its own capability (transfer derives, it does not move)
        assert any(c.slot == proc.slot("n") for c in proc.caps())
        await received.wait()

    k = bare_kernel
    ep = k.new_endpoint()
    n = k.new_notification("gift")
    rcv = k.spawn(receiver, caps={"in": Grant(ep, "r")})
    giv = k.spawn(giver, caps={"out": Grant(ep, "wg"), "n": Grant(n, "w")})
    await received.wait()
    await finish(k, giv)
    mine = {c.slot: c for c in k.capabilities(rcv)}
    cap = mine[info["slot"]]
    assert cap.kind == "Notification" and cap.object_name == "gift"
    assert cap.rights == "-w-"  # no more than the sender had
    assert info["parent_seen"] == info["giver"] == (giv, info["giver"][1])
    # the sender ended: its child is spliced onto the root's capability
    assert cap.parent == (0, n.slot)
    assert k.stats.caps_transferred == 1
    assert await k.revoke(n) >= 1
    assert info["slot"] not in {c.slot for c in k.capabilities(rcv)}
    revoked.set()
    await finish(k, rcv)


async def test_transferred_cap_is_child_of_senders_cap(bare_kernel: capkern.Kernel) -> None:
    """The receiver's capability derives from the sender's: revoking the sender's own
    capability (from the sender's domain) removes the receiver's copy."""
    step = trio.Event()
    done = trio.Event()

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("in")
        step.set()
        await done.wait()
        with pytest.raises(capkern.EmptySlot):
            proc.signal(msg.caps[0])

    async def giver(proc: Process) -> None:
        await proc.send("out", "here", None, caps=["n"])
        await step.wait()
        assert await proc.revoke("n") == 1
        proc.signal("n")  # revoke spares the capability itself
        done.set()

    k = bare_kernel
    ep = k.new_endpoint()
    n = k.new_notification()
    rcv = k.spawn(receiver, caps={"in": Grant(ep, "r")})
    giv = k.spawn(giver, caps={"out": Grant(ep, "wg"), "n": n})
    await finish(k, giv)
    await finish(k, rcv)


async def test_more_than_max_caps_is_refused(bare_kernel: capkern.Kernel) -> None:
    async def client(proc: Process, limit: int) -> None:
        slots = [proc.copy("n") for _ in range(limit + 1)]
        with pytest.raises(capkern.TooManyCaps):
            await proc.send("s", "many", None, caps=slots)
        with pytest.raises(capkern.TooManyCaps):
            await proc.call("s", "many", None, caps=slots)
        # exactly the limit is fine
        got = await proc.call("s", "enough", None, caps=slots[:limit])
        assert got.body["label"] == "enough"

    k = bare_kernel
    ep = start_echo(k)
    n = k.new_notification()
    limit = k.limits.max_caps
    await finish(k, k.spawn(client, limit, caps={"s": Grant(ep, "wg"), "n": n}))


# -- rights and forged slots ---------------------------------------------------------------


async def test_rights_are_enforced(bare_kernel: capkern.Kernel) -> None:
    async def reader(proc: Process) -> None:
        with pytest.raises(capkern.InsufficientRights, match="reader"):
            await proc.send("ro", "x", 1)
        with pytest.raises(capkern.InsufficientRights):
            await proc.call("ro", "x", 1)
        with pytest.raises(capkern.InsufficientRights):
            proc.nbsend("ro", "x", 1)
        with pytest.raises(capkern.InsufficientRights):
            await proc.recv("wo")
        with pytest.raises(capkern.InsufficientRights):
            proc.signal("nro")
        with pytest.raises(capkern.InsufficientRights):
            proc.poll("nwo")
        with pytest.raises(capkern.WrongObjectType):
            await proc.send("nwo", "x", 1)
        # rights only shrink
        weaker = proc.copy("wo", "rwg")
        assert {c.slot: c.rights for c in proc.caps()}[weaker] == "-w-"
        await still_serves(proc, "wo")

    k = bare_kernel
    ep = start_echo(k)
    n = k.new_notification()
    caps = {"ro": Grant(ep, "r"), "wo": Grant(ep, "w"), "nro": Grant(n, "r"),
            "nwo": Grant(n, "w")}
    await finish(k, k.spawn(reader, name="reader", caps=caps))


FORGED = [0, -1, 10**9, "nope", True, 2.5]


@pytest.mark.parametrize("slot", FORGED, ids=repr)
async def test_forged_slots_are_invalid_and_name_the_domain(
        slot: Any, bare_kernel: capkern.Kernel) -> None:
    async def prober(proc: Process) -> None:
        ops: list[Callable[[], Awaitable[object]]] = [
            lambda: proc.send(slot, "x", 1),
            lambda: proc.call(slot, "x", 1),
            lambda: proc.recv(slot),
            lambda: proc.send("s", "x", 1, caps=[slot]),
            lambda: proc.revoke(slot),
        ]
        for op in ops:
            with pytest.raises(capkern.InvalidSlot) as info:
                await op()
            assert isinstance(info.value, capkern.CapkernError)
            assert "prober" in str(info.value)
        for sync in (lambda: proc.nbsend(slot, "x"), lambda: proc.signal(slot),
                     lambda: proc.poll(slot), lambda: proc.copy(slot),
                     lambda: proc.delete(slot), lambda: proc.reply_to(slot)):
            with pytest.raises(capkern.InvalidSlot, match="prober"):
                sync()
        await still_serves(proc)

    k = bare_kernel
    ep = start_echo(k)
    await finish(k, k.spawn(prober, name="prober", caps={"s": Grant(ep, "wg")}))


async def test_cannot_reach_another_domains_slots(bare_kernel: capkern.Kernel) -> None:
    """Slot numbers are per domain: the same index in another CSpace is not ours."""

    async def holder(proc: Process) -> None:
        await trio.sleep_forever()

    async def thief(proc: Process, slot: int) -> None:
        with pytest.raises((capkern.InvalidSlot, capkern.EmptySlot)):
            await proc.send(slot, "steal", 1)

    k = bare_kernel
    ep = k.new_endpoint()
    extra = k.new_endpoint()
    h = k.spawn(holder, caps={"a": ep, "b": extra})
    slots = [c.slot for c in k.capabilities(h)]
    for slot in slots:
        await finish(k, k.spawn(thief, slot))
    k.kill(h)


# -- notifications ---------------------------------------------------------------------------


async def test_signal_ors_badges_and_poll_is_empty_after(bare_kernel: capkern.Kernel) -> None:
    async def signaller(proc: Process) -> None:
        proc.signal("n")

    async def waiter(proc: Process) -> None:
        assert await proc.wait("n") == 3
        assert proc.poll("n") == 0

    k = bare_kernel
    n = k.new_notification()
    for badge in (1, 2, 2):
        await finish(k, k.spawn(signaller, caps={"n": Grant(n, "w", badge=badge)}))
    await finish(k, k.spawn(waiter, caps={"n": Grant(n, "r")}))


async def test_poll_returns_zero_when_empty_then_word(bare_kernel: capkern.Kernel) -> None:
    async def prog(proc: Process) -> None:
        assert proc.poll("n") == 0
        proc.signal("b4")
        proc.signal("b1")
        assert proc.poll("n") == 5
        assert proc.poll("n") == 0
        proc.signal("n")  # unbadged signals bit 1
        assert proc.poll("n") == 1

    k = bare_kernel
    n = k.new_notification()
    caps: dict[str, RootCap | Grant] = {
        "n": n, "b4": Grant(n, "w", badge=4), "b1": Grant(n, "w", badge=1)
    }
    await finish(k, k.spawn(prog, caps=caps))


async def test_wait_blocks_until_signalled(autojump_clock: trio.abc.Clock) -> None:
    woke: list[int] = []

    async def waiter(proc: Process) -> None:
        woke.append(await proc.wait("n"))

    async def signaller(proc: Process) -> None:
        proc.signal("n")

    async with capkern.boot(paging=False) as k:
        n = k.new_notification()
        w = k.spawn(waiter, caps={"n": Grant(n, "r")})
        await trio.sleep(100)
        assert woke == [] and k.status(w) is None
        await finish(k, k.spawn(signaller, caps={"n": Grant(n, "w", badge=8)}))
        await finish(k, w)
    assert woke == [8]


async def test_signal_wakes_the_waiter_with_its_badge_and_later_signals_stay_pending() -> None:
    """A signal to a notification with a waiter hands that waiter the badge at once; a
    signal after it (before the waiter runs again) is kept in the word, not lost."""
    woke: list[int] = []
    later: list[int] = []

    async def waiter(proc: Process) -> None:
        assert proc.poll("n") == 0
        woke.append(await proc.wait("n"))
        later.append(proc.poll("n"))

    async def signaller(proc: Process) -> None:
        proc.signal("one")  # the waiter is blocked: it gets badge 1
        proc.signal("two")  # no waiter any more: bit 2 waits in the word

    async with capkern.boot(paging=False) as k:
        n = k.new_notification()
        w = k.spawn(waiter, caps={"n": Grant(n, "r")})
        await trio.testing.wait_all_tasks_blocked()
        assert k.status(w) is None and woke == []
        await finish(k, k.spawn(signaller, caps={"one": Grant(n, "w", badge=1),
                                                "two": Grant(n, "w", badge=2)}))
        await finish(k, w)
        assert k.stats.signals == 2
    assert (woke, later) == ([1], [2])


# -- bad input at the boundary -------------------------------------------------------------


def _deep(depth: int) -> Any:
    body: Any = 0
    for _ in range(depth):
        body = [body]
    return body


BAD_INPUTS: dict[str, tuple[type[Exception], Any]] = {
    "raw-reserved-byte": (capkern.MalformedMessage, ("raw", b"\xc1")),
    "raw-truncated": (capkern.MalformedMessage, ("raw", b"\x93\x01\x02")),
    "raw-trailing": (capkern.MalformedMessage, ("raw", b"\x01\x02")),
    "raw-bad-utf8": (capkern.MalformedMessage, ("raw", b"\xa2\xff\xfe")),
    "raw-ext-type": (capkern.MalformedMessage, ("raw", b"\xd4\x05\x00")),
    "raw-not-bytes": (capkern.MalformedMessage, ("raw", "a str")),
    "raw-oversized": (capkern.MessageTooLarge, ("raw", b"\xc4" + b"\x00" * 2000)),
    "oversized": (capkern.MessageTooLarge, ("body", b"x" * 2000)),
    "oversized-list": (capkern.MessageTooLarge, ("body", list(range(1000)))),
    "deep": (capkern.NestingTooDeep, ("body", _deep(100))),
    "raw-deep": (capkern.NestingTooDeep, ("raw", b"\x91" * 100 + b"\x00")),
    "object": (capkern.UnencodableBody, ("body", object())),
    "set": (capkern.UnencodableBody, ("body", {1, 2})),
    "nested-set": (capkern.UnencodableBody, ("body", {"k": [1, {2}]})),
    "bad-key": (capkern.UnencodableBody, ("body", {(1, 2): 3})),
    "huge-int": (capkern.UnencodableBody, ("body", 1 << 80)),
    "empty-label": (capkern.MalformedMessage, ("label", "")),
    "long-label": (capkern.MalformedMessage, ("label", "x" * 1000)),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=str)
async def test_bad_input_refused_at_sender_and_server_keeps_serving(case: str) -> None:
    expected, (how, value) = BAD_INPUTS[case]
    seen: list[str] = []

    async def server(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            seen.append(msg.label)
            proc.reply("ok", {"body": msg.body})

    async def client(proc: Process) -> None:
        for attempt in ("call", "send"):
            with pytest.raises(expected) as info:
                if how == "raw":
                    if attempt == "call":
                        await proc.call_raw("s", "bad", value)
                    else:
                        await proc.send_raw("s", "bad", value)
                elif how == "label":
                    await (proc.call if attempt == "call" else proc.send)("s", value, 1)
                else:
                    await (proc.call if attempt == "call" else proc.send)("s", "bad", value)
            assert isinstance(info.value, capkern.MessageError)
            assert isinstance(info.value, capkern.CapkernError)
        await still_serves(proc)

    async with capkern.boot(paging=False, limits=Limits(max_body_bytes=1024)) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
        assert k.stats.messages_rejected >= 2
        assert k.status(srv) is None and k.stats.crashes == 0
    assert seen == ["ping"]  # the server never saw any of the bad messages


async def test_good_raw_bytes_pass_and_arrive_decoded(bare_kernel: capkern.Kernel) -> None:
    async def client(proc: Process) -> None:
        got = await proc.call_raw("s", "raw", b"\x82\xa1a\x01\xa1b\x92\xc3\xc0")
        assert got.body["body"] == {"a": 1, "b": [True, None]}

    k = bare_kernel
    ep = start_echo(k)
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))


async def test_bad_reply_body_fails_both_sides_without_hanging(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        with pytest.raises(capkern.UnencodableBody):
            proc.reply("ok", object())
        await proc.recv("service")
        with pytest.raises(capkern.MalformedMessage):
            proc.reply_raw("ok", b"\xc1")
        await proc.recv("service")
        proc.reply("ok", "fine")

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.ReplyRefused, match="UnencodableBody"):
            await proc.call("s", "a")
        with pytest.raises(capkern.ReplyRefused, match="MalformedMessage"):
            await proc.call("s", "b")
        assert (await proc.call("s", "c")).body == "fine"

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    with trio.fail_after(5):
        await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
        await finish(k, srv)


SEEN: list[Any] = []  # what the adder saw (args cross as copies, so a module global)


REFUSED_REPLIES: dict[str, tuple[type[Exception], str, dict[str, Any], str]] = {
    "caps-without-grant": (capkern.ReplyError, "w", {"caps": ["service"]}, "grant"),
    "forged-cap-slot": (capkern.InvalidSlot, "wg", {"caps": [999]}, "InvalidSlot"),
    "too-many-caps": (capkern.TooManyCaps, "wg", {"caps": ["service"] * 9}, "TooManyCaps"),
    "empty-label": (capkern.MalformedMessage, "wg", {"label": ""}, "MalformedMessage"),
}


@pytest.mark.parametrize("case", list(REFUSED_REPLIES), ids=str)
@pytest.mark.parametrize("saved", [False, True], ids=["reply", "reply_to"])
async def test_refused_reply_fails_the_caller_instead_of_hanging(
        case: str, saved: bool, autojump_clock: trio.abc.Clock,
        bare_kernel: capkern.Kernel) -> None:
    """Regression: a reply refused at its checks used to consume the reply capability
    without waking the caller, which then waited forever.  Now the refused reply is not
    used up; a server that gives up the caller (receives again, or deletes the saved
    reply capability) fails it with ReplyRefused naming the cause."""
    expected, rights, kwargs, cause = REFUSED_REPLIES[case]
    label = kwargs.get("label", "ok")
    caps = kwargs.get("caps", ())

    async def server(proc: Process) -> None:
        await proc.recv("service")
        with pytest.raises(expected):
            if saved:
                slot = proc.save_caller()
                try:
                    proc.reply_to(slot, label, 1, caps=caps)
                finally:
                    proc.delete(slot)  # gives the caller up
            else:
                proc.reply(label, 1, caps=caps)
        msg = await proc.recv("service")  # and it still serves
        proc.reply("ok", msg.body)

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.ReplyRefused) as info:
            await proc.call("s", "x")
        # the caller learns the kind of failure, not the server's slots or identity
        assert cause in str(info.value)
        assert "slot" not in str(info.value) and "secret" not in str(info.value)
        assert (await proc.call("s", "y", 2)).body == 2

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, name="secret-server", caps={"service": Grant(ep, "rwg")})
    with trio.fail_after(5):
        await finish(k, k.spawn(client, caps={"s": Grant(ep, rights)}))
        await finish(k, srv)


async def test_reply_can_carry_caps_when_the_caller_granted(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        gift = proc.new_notification("gift")
        assert proc.reply("ok", "take", caps=[gift]) is True

    async def client(proc: Process) -> None:
        got = await proc.call("s", "give me")
        (slot,) = got.caps
        assert {c.slot: c.kind for c in proc.caps()}[slot] == "Notification"
        proc.signal(slot)
        assert proc.poll(slot) == 1

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "wg")}))
    await finish(k, srv)


async def test_deleting_a_saved_reply_aborts_the_caller(bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        proc.delete(proc.save_caller())

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.CallAborted, match="deleted"):
            await proc.call("s", "x")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


async def adder(proc: Process) -> None:
    """Serves ADD on its own contracted endpoint, handed to the root-provided 'boot'."""
    seen = SEEN
    ep = proc.new_endpoint("adder", contract=ADD)
    await proc.send("boot", "ready", None, caps=[ep])
    while True:
        msg = await proc.recv(ep)
        seen.append((msg.label, msg.body))
        a, b = msg.body["a"], msg.body["b"]
        if a + b > 1000:
            proc.reply_error("overflow", f"{a}+{b}")
        elif a == 13:
            try:
                proc.reply("ok", {"sum": "thirteen"})
            except capkern.ContractViolation:
                seen.append("reply refused")
        elif a == 14:
            try:
                proc.reply_error("undeclared", "nope")
            except capkern.ContractViolation:
                seen.append("error refused")
        elif a == 15:
            try:
                proc.reply("weird", {"sum": 1})
            except capkern.ContractViolation:
                seen.append("label refused")
        else:
            proc.reply("ok", {"sum": a + b})


async def test_contracted_endpoint_checks_requests_and_replies() -> None:
    seen = SEEN
    seen.clear()
    outcomes: list[str] = []

    async def broker(proc: Process) -> None:
        """Receives the adder's endpoint cap, then plays client."""
        msg = await proc.recv("boot")
        svc = msg.caps[0]
        good = await proc.call(svc, "add", {"a": 1, "b": 2})
        assert good.label == "ok" and good.ok() == {"sum": 3}

        bad_requests: list[tuple[str, Any]] = [
            ("sub", {"a": 1, "b": 2}),           # unknown label
            ("add", {"a": "1", "b": 2}),         # wrong type
            ("add", {"a": 1}),                   # missing key
            ("add", {"a": 1, "b": 2, "c": 3}),   # extra key
            ("add", [1, 2]),                     # not a map
            ("add", {"a": True, "b": 2}),        # bool is not int
        ]
        for label, body in bad_requests:
            with pytest.raises(capkern.ContractViolation):
                await proc.call(svc, label, body)
            with pytest.raises(capkern.ContractViolation):
                proc.nbsend(svc, label, body)
        outcomes.append("requests refused")

        for a in (13, 14, 15):  # the server replies out of contract
            with pytest.raises(capkern.ReplyRefused, match="out of contract"):
                await proc.call(svc, "add", {"a": a, "b": 0})
        outcomes.append("bad replies refused")

        err = await proc.call(svc, "add", {"a": 999, "b": 999})
        assert err.label == "error"
        with pytest.raises(capkern.ServerError) as info:
            err.ok()
        assert info.value.reason == "overflow" and info.value.detail == "999+999"
        assert isinstance(info.value, capkern.CapkernError)
        outcomes.append("typed error")

        assert (await proc.call(svc, "add", {"a": 20, "b": 22})).ok() == {"sum": 42}

    async with capkern.boot(paging=False) as k:
        boot_ep = k.new_endpoint("boot")
        srv = k.spawn(adder, name="adder", kind="server",
                      caps={"boot": Grant(boot_ep, "wg")})
        with trio.fail_after(5):
            await finish(k, k.spawn(broker, caps={"boot": Grant(boot_ep, "r")}))
        assert k.status(srv) is None
        assert k.stats.contract_violations >= 12 + 3
    assert outcomes == ["requests refused", "bad replies refused", "typed error"]
    labels = [s for s in seen if isinstance(s, tuple)]
    # the server saw only in-contract requests
    assert labels == [
        ("add", {"a": 1, "b": 2}),
        ("add", {"a": 13, "b": 0}),
        ("add", {"a": 14, "b": 0}),
        ("add", {"a": 15, "b": 0}),
        ("add", {"a": 999, "b": 999}),
        ("add", {"a": 20, "b": 22}),
    ]
    assert [s for s in seen if isinstance(s, str)] == [
        "reply refused", "error refused", "label refused"
    ]


async def test_queue_full_when_too_many_senders_block() -> None:
    async def blocker(proc: Process, i: int) -> None:
        await proc.send("out", "wait", i)

    got: list[int] = []

    async def overflow(proc: Process) -> None:
        with pytest.raises(capkern.QueueFull):
            await proc.send("out", "one too many", 99)
        with pytest.raises(capkern.QueueFull):
            await proc.call("out", "one too many", 99)

    async def drain(proc: Process, n: int) -> None:
        for _ in range(n):
            got.append((await proc.recv("in")).body)

    async with capkern.boot(paging=False, limits=Limits(max_queued_senders=3)) as k:
        ep = k.new_endpoint()
        blockers = [k.spawn(blocker, i, caps={"out": Grant(ep, "w")}) for i in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert all(k.status(p) is None for p in blockers)
        await finish(k, k.spawn(overflow, caps={"out": Grant(ep, "w")}))
        await finish(k, k.spawn(drain, 3, caps={"in": Grant(ep, "r")}))
        for pid in blockers:
            await finish(k, pid)
        # room again once drained
        k.spawn(blocker, 7, caps={"out": Grant(ep, "w")})
        await finish(k, k.spawn(drain, 1, caps={"in": Grant(ep, "r")}))
    assert sorted(got[:3]) == [0, 1, 2] and got[3] == 7  # (trio picks the start order)


# -- trace -----------------------------------------------------------------------------------


async def test_trace_records_calls_and_replies_as_json() -> None:
    async def client(proc: Process) -> None:
        await proc.call("s", "hello", {"x": 1})
        await proc.call("s", "world", None)

    async with capkern.boot(paging=False, trace=True) as k:
        ep = start_echo(k)
        await finish(k, k.spawn(client, name="tracer", caps={"s": Grant(ep, "w", badge=5)}))
        records = list(k.trace.records)
        data = json.loads(k.trace.as_json())
    ops = [(r.op, r.label) for r in records]
    assert ("call", "hello") in ops and ("call", "world") in ops
    assert sum(1 for op, _ in ops if op == "reply") == 2
    assert isinstance(data, list) and len(data) == len(records)
    labels = {d["label"] for d in data}
    assert {"hello", "world", "ok"} <= labels
    call = next(d for d in data if d["label"] == "hello")
    assert call["op"] == "call" and call["domain"] == "tracer" and call["badge"] == 5
    assert call["body_bytes"] > 0


async def test_trace_is_off_by_default(bare_kernel: capkern.Kernel) -> None:
    async def client(proc: Process) -> None:
        await proc.call("s", "hello")

    k = bare_kernel
    ep = start_echo(k)
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert len(k.trace.records) == 0
    assert json.loads(k.trace.as_json()) == []
    assert k.stats.ipc_calls == 1 and k.stats.ipc_replies == 1


async def test_reply_with_a_bad_cap_name_keeps_the_caller_answerable(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    errors: list[str] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        try:
            proc.reply("ok", caps=["no-such-slot"])
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)
        proc.reply("ok", msg.body)
        msg = await proc.recv("service")
        slot = proc.save_caller("later")
        try:
            proc.reply_to(slot, "ok", caps=["no-such-slot"])
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)
        proc.reply_to(slot, "ok", msg.body)
        await trio.sleep_forever()

    async def client(proc: Process) -> int:
        first = await proc.call("server", "q", 1)
        second = await proc.call("server", "q", 2)
        total: int = first.body * 10 + second.body
        return total

    k = bare_kernel
    ep = k.new_endpoint("svc")
    k.spawn(server, caps={"service": Grant(ep, "rg")})
    pid = k.spawn(client, caps={"server": Grant(ep, "wg")})
    with trio.fail_after(5):
        assert (await k.wait(pid)).code == 12
    assert errors == ["InvalidSlot", "InvalidSlot"]


async def test_save_caller_into_a_full_cspace_keeps_the_reply(
        autojump_clock: trio.abc.Clock) -> None:
    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        while True:  # fill the CSpace
            try:
                proc.new_notification()
            except capkern.CSpaceFull:
                break
        with pytest.raises(capkern.CSpaceFull):
            proc.save_caller("c")
        proc.reply("ok", msg.body)
        await trio.sleep_forever()

    async def client(proc: Process) -> int:
        got = await proc.call("server", "q", 5)
        code: int = got.body
        return code

    async with capkern.boot(paging=False, cspace_size=4) as k:
        ep = k.new_endpoint("svc")
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        pid = k.spawn(client, caps={"server": Grant(ep, "w")})
        with trio.fail_after(5):
            assert (await k.wait(pid)).code == 5
        assert k.status(srv) is None
