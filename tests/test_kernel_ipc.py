"""IPC semantics through the kernel: call/reply pairing, one-shot reply capabilities,
badges, capability transfer and revoke, notifications, and bad input at the boundary
(each followed by a check that the server still serves)."""

from __future__ import annotations

import json

import pytest
import trio

import capkern
from capkern import Grant, Process
from capkern.contract import Contract, Int, Op, Struct

ADD = Contract("adder", {"add": Op(Struct({"a": Int(), "b": Int()}), Struct({"sum": Int()}),
                                   frozenset({"overflow"}))})


async def adder(proc: Process, publish: bool = True) -> None:
    """Serves ADD on its own contracted endpoint, which it hands to the root via 'boot'."""
    ep = proc.new_endpoint("adder", contract=ADD)
    await proc.send("boot", "ready", None, caps=[ep])
    while True:
        msg = await proc.recv(ep)
        a, b = msg.body["a"], msg.body["b"]
        if a + b > 1000:
            proc.reply_error("overflow", f"{a}+{b}")
        elif a == 13:
            with pytest.raises(capkern.ContractViolation):
                proc.reply("ok", {"sum": "thirteen"})  # out of contract
        else:
            proc.reply("ok", {"sum": a + b})


async def echo(proc: Process) -> None:
    msg = await proc.recv("service")
    while True:
        msg = await proc.reply_recv("service", "ok", {"body": msg.body, "badge": msg.badge})


async def _run(kernel: capkern.Kernel, program, *args, **caps) -> capkern.ExitStatus:
    status = await kernel.wait(kernel.spawn(program, *args, caps=caps))
    return status


async def test_concurrent_calls_pair_with_their_replies_and_badges() -> None:
    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("echo")
        k.spawn(echo, caps={"service": Grant(ep, "r")})
        results: dict[int, list[tuple[object, object]]] = {}

        async def client(proc: Process, me: int) -> None:
            got = []
            for i in range(20):
                r = await proc.call("s", "echo", [me, i])
                got.append((r.body["body"], r.body["badge"]))
            results[me] = got

        pids = [k.spawn(client, b, caps={"s": Grant(ep, "w", badge=b)}) for b in (1, 2, 3)]
        assert all([(await k.wait(p)).ok for p in pids])
        for b in (1, 2, 3):
            assert results[b] == [([b, i], b) for i in range(20)]


async def test_reply_cap_is_one_shot_and_save_caller() -> None:
    seen: list[str] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        proc.reply("ok", 1)
        for value in (2, 3):
            try:
                proc.reply("ok", value)
            except capkern.ReplyError:
                seen.append("ReplyError")
        await proc.recv("service")
        saved = proc.save_caller("later")
        await trio.sleep(0)
        assert proc.reply_to(saved, "ok", "late") is True
        with pytest.raises(capkern.EmptySlot):
            proc.reply_to(saved, "ok", "again")
        seen.append("saved-ok")

    async def client(proc: Process) -> int:
        a = await proc.call("s", "x")
        b = await proc.call("s", "y")
        return 0 if (a.body, b.body) == (1, "late") else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        assert (await _run(k, client, s=Grant(ep, "w"))).ok
        assert (await k.wait(srv)).ok
    assert seen == ["ReplyError", "ReplyError", "saved-ok"]


async def test_server_dying_or_receiving_again_aborts_the_caller() -> None:
    async def bad_server(proc: Process) -> None:
        await proc.recv("service")
        await proc.recv("service")  # receives again without replying

    async def dying_server(proc: Process) -> None:
        await proc.recv("service")
        raise RuntimeError("boom")

    async def client(proc: Process) -> int:
        try:
            await proc.call("s", "x")
        except capkern.CallAborted:
            return 0
        return 1

    async with capkern.boot(paging=False) as k:
        for server in (bad_server, dying_server):
            ep = k.new_endpoint()
            k.spawn(server, caps={"service": Grant(ep, "r")})
            first = k.spawn(client, caps={"s": Grant(ep, "w")})
            if server is bad_server:
                k.spawn(client, caps={"s": Grant(ep, "w")})
            assert (await k.wait(first)).ok
        assert k.stats.crashes == 1


async def test_cancelled_caller_makes_reply_a_no_op(autojump_clock: trio.abc.Clock) -> None:
    replies: list[bool] = []

    async def slow_server(proc: Process) -> None:
        await proc.recv("service")
        await trio.sleep(10)
        replies.append(proc.reply("ok", "too late"))

    async def impatient(proc: Process) -> int:
        with trio.move_on_after(1):
            await proc.call("s", "x")
            return 1
        return 0

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(slow_server, caps={"service": Grant(ep, "r")})
        assert (await _run(k, impatient, s=Grant(ep, "w"))).ok
        assert (await k.wait(srv)).ok
    assert replies == [False]


async def test_send_blocks_until_received_and_nbsend() -> None:
    order: list[str] = []

    async def receiver(proc: Process) -> None:
        await trio.sleep(0.01)
        order.append("recv")
        await proc.recv("in")

    async def sender(proc: Process) -> int:
        dropped = proc.nbsend("out", "x")
        await proc.send("out", "x")
        order.append("sent")
        return 0 if dropped is False else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        k.spawn(receiver, caps={"in": Grant(ep, "r")})
        assert (await _run(k, sender, out=Grant(ep, "w"))).ok
    assert order == ["recv", "sent"]


async def test_cap_transfer_needs_grant_and_revoke_reaches_receiver() -> None:
    async with capkern.boot(paging=False) as k:
        mailbox = k.new_endpoint("mailbox")
        secret = k.new_endpoint("secret")
        k.spawn(echo, caps={"service": Grant(secret, "r")})
        holder_slots: list[int] = []

        async def holder(proc: Process) -> int:
            msg = await proc.recv("mail")
            holder_slots.extend(msg.caps)
            r = await proc.call(msg.caps[0], "hi", 1)
            assert r.body["body"] == 1
            await proc.recv("mail")  # wait for the revoke
            try:
                await proc.call(msg.caps[0], "hi", 2)
            except capkern.EmptySlot as exc:
                return 0 if "revoked" in str(exc) else 2
            return 1

        async def giver(proc: Process) -> int:
            with pytest.raises(capkern.InsufficientRights):
                await proc.send("mail_nogrant", "cap", None, caps=["secret"])
            with pytest.raises(capkern.TooManyCaps):
                await proc.send("mail", "cap", None, caps=["secret"] * 5)
            await proc.send("mail", "cap", None, caps=["secret"])
            return 0

        h = k.spawn(holder, caps={"mail": Grant(mailbox, "r")})
        secret_w = k.mint(secret, "w")
        g = k.spawn(giver, caps={"mail": Grant(mailbox, "wg"), "mail_nogrant": Grant(mailbox, "w"),
                                 "secret": Grant(secret_w, "w")})
        assert (await k.wait(g)).ok
        while not holder_slots:
            await trio.sleep(0.001)
        assert await k.revoke(secret_w) == 1  # the giver exited: only the holder's transfer is left
        poke = k.spawn(lambda p: p.send("m", "wake"), caps={"m": Grant(mailbox, "w")})
        await k.wait(poke)
        assert (await k.wait(h)).ok


async def test_rights_and_forged_slots() -> None:
    async def prober(proc: Process) -> int:
        with pytest.raises(capkern.InsufficientRights):
            await proc.send("ro", "x")
        with pytest.raises(capkern.InsufficientRights):
            await proc.recv("wo")
        for slot in (0, -1, 10**9, True, 2.5):
            with pytest.raises(capkern.InvalidSlot) as info:
                await proc.send(slot, "x")  # type: ignore[arg-type]
            assert "'prober'" in str(info.value)
        with pytest.raises(capkern.InvalidSlot):
            await proc.send("no-such-name", "x")
        assert proc.copy("ro", "rwg") and proc.caps()[-1].rights == "r--"
        return 0

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        assert (await _run(k, prober, ro=Grant(ep, "r"), wo=Grant(ep, "w"))).ok


async def test_notifications_or_badges() -> None:
    async def waiter(proc: Process) -> int:
        assert proc.poll("n") == 0
        word = await proc.wait("n")
        return 0 if word == 3 else word

    async def signaller(proc: Process) -> None:
        proc.signal("one")
        proc.signal("two")

    async with capkern.boot(paging=False) as k:
        n = k.new_notification()
        w = k.spawn(waiter, caps={"n": Grant(n, "r")})
        await trio.sleep(0.01)
        k.spawn(signaller, caps={"one": Grant(n, "w", 1), "two": Grant(n, "w", 2)})
        status = await k.wait(w)
        assert status.code in (0, 1)  # woken by badge 1, or by 1|2 if both landed first
        assert k.stats.signals == 2


@pytest.mark.parametrize("bad", ["garbage", "oversized", "deep", "object", "label", "contract"])
async def test_bad_input_rejected_and_server_keeps_serving(bad: str) -> None:
    async def attacker(proc: Process) -> int:
        with pytest.raises(capkern.MessageError):
            if bad == "garbage":
                await proc.call_raw("s", "add", b"\xc1\xff\x00junk")
            elif bad == "oversized":
                await proc.call("s", "add", b"x" * 5000)
            elif bad == "deep":
                nested: list[object] = []
                for _ in range(100):
                    nested = [nested]
                await proc.call("s", "add", nested)
            elif bad == "object":
                await proc.call("s", "add", {"a": object()})
            elif bad == "label":
                await proc.call("s", "", {"a": 1, "b": 2})
            else:
                await proc.call("s", "mul", {"a": 1, "b": 2})
        with pytest.raises(capkern.ContractViolation):
            await proc.call("s", "add", {"a": "1", "b": 2})
        # the server replied out of contract
        with pytest.raises(capkern.ReplyRefused, match="out of contract"):
            await proc.call("s", "add", {"a": 13, "b": 0})
        with pytest.raises(capkern.ServerError) as info:
            (await proc.call("s", "add", {"a": 999, "b": 2})).ok()
        assert info.value.reason == "overflow"
        return 0 if (await proc.call("s", "add", {"a": 2, "b": 3})).ok() == {"sum": 5} else 1

    async with capkern.boot(paging=False, limits=capkern.Limits(max_body_bytes=1024)) as k:
        boot_ep = k.new_endpoint("boot")
        k.spawn(adder, name="adder", caps={"boot": Grant(boot_ep, "wg")})
        got: list[int] = []

        async def root_side(proc: Process) -> None:
            msg = await proc.recv("b")
            got.extend(msg.caps)
            await proc.send("a", "cap", None, caps=[msg.caps[0]])

        # relay the adder's endpoint to the attacker through a helper domain
        relay_ep = k.new_endpoint("relay")
        k.spawn(root_side, caps={"b": Grant(boot_ep, "r"), "a": Grant(relay_ep, "wg")})

        async def attacker_main(proc: Process) -> int:
            msg = await proc.recv("relay")
            proc.name_slot(msg.caps[0], "s")
            return await attacker(proc)

        status = await _run(k, attacker_main, relay=Grant(relay_ep, "r"))
        assert status.ok, status
        assert k.stats.messages_rejected + k.stats.contract_violations >= 2
        assert all(d.state == "running" for d in k.domains() if d.name == "adder")


async def test_queue_full_is_bounded() -> None:
    async with capkern.boot(paging=False, limits=capkern.Limits(max_queued_senders=3)) as k:
        ep = k.new_endpoint()

        async def flooder(proc: Process) -> int:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(proc.send, "s", "x")
                await trio.sleep(0.01)
                with pytest.raises(capkern.QueueFull):
                    await proc.send("s", "x")
                nursery.cancel_scope.cancel()
            return 0

        assert (await _run(k, flooder, s=Grant(ep, "w"))).ok


async def test_trace_and_dump_are_json() -> None:
    async with capkern.boot(paging=False, trace=True) as k:
        ep = k.new_endpoint("echo")
        k.spawn(echo, caps={"service": Grant(ep, "r")})
        assert (await _run(k, lambda p: p.call("s", "ping", 1), s=Grant(ep, "w", 9))).ok
        records = json.loads(k.trace.as_json())
        assert {"call", "reply"} <= {r["op"] for r in records}
        assert any(r["label"] == "ping" and r["badge"] == 9 for r in records)
        dump = json.loads(json.dumps(k.dump()))
        caps = [c for d in dump["domains"] for c in d["caps"]]
        assert any(c["parent"] == [0, 1] for c in caps)  # derived from the root's cap
