"""Capabilities in replies: nobody -- the kernel least of all -- receives capabilities it
did not ask for, and a server's refused reply is reported to the right party.

* A reply carries capabilities only if the caller's capability had the grant right and,
  on a contracted endpoint, the operation declares them (``Op.reply_caps``).  Anything
  else is refused, counted (``stats.unsolicited_caps``) and logged as an event.
* The kernel calls its servers through write-only capabilities: a pager attaching
  capabilities to every reply cannot fill the root CSpace.
* The server whose reply is refused gets the typed error and keeps the reply
  capability (it may answer again); the caller, if the server never does, gets
  ``ReplyRefused`` naming the cause.
"""

from __future__ import annotations

import pytest
import trio

import capkern
from capkern import Grant, Process, programs
from capkern._contract import Contract, Int, Null, Op, Struct
from capkern._protocols import BLOCKDEV, CRYPT, PAGER
from capkern.mmu._ports import IpcPort
from capkern.testing import AttachCaps, Evidence, attack_pager

GIVE = Contract("give", {
    "one": Op(Struct({}), Null(), reply_caps=1),
    "none": Op(Struct({}), Null()),
})


async def finish(k: capkern.Kernel, pid: int) -> capkern.ExitStatus:
    status = await k.wait(pid)
    assert status.ok, status
    return status


async def test_a_pager_attaching_caps_to_every_reply_never_reaches_the_root(
        autojump_clock: trio.abc.Clock) -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=4, pager=attack_pager(AttachCaps(3), evidence=ev)) as k:
        root_before = len(k.capabilities(0))
        pids = [k.spawn(programs.sequential, 12, 2, seed) for seed in range(2)]
        for pid in pids:
            await finish(k, pid)  # the refused replies cost the workload nothing
        assert len(k.capabilities(0)) == root_before
        assert k.stats.unsolicited_caps >= 10
        assert k.stats.unsolicited_caps == ev.tried["attach-caps"]
        assert k.events.counts["unsolicited_caps"] == k.stats.unsolicited_caps
        assert {e.domain for e in k.events.of_kind("unsolicited_caps")} == {"pager"}
        k.new_endpoint("still room")
    assert ev.breaches == []
    assert ev.refused["ReplyError"] == ev.tried["attach-caps"]


async def test_the_kernel_calls_its_servers_without_the_grant_right() -> None:
    async with capkern.boot(ram_pages=4) as k:
        assert k.vm is not None
        for port in (k.vm.pager.port, k.vm.crypt):
            assert isinstance(port, IpcPort)
            cap = port.cap
            assert cap.rights == capkern.Rights.WRITE
    for contract in (CRYPT, PAGER, BLOCKDEV):
        assert all(op.reply_caps == 0 for op in contract.ops.values()), contract.name


@pytest.mark.parametrize("rights", ["w", "wg"])
async def test_reply_with_caps_to_a_caller_without_grant_is_refused_and_retried(
        rights: str, autojump_clock: trio.abc.Clock) -> None:
    """The server gets the typed error, keeps the reply capability and answers again."""
    server_saw: list[str] = []

    async def server(proc: Process) -> None:
        await proc.recv("service")
        gift = proc.new_notification("gift")
        try:
            proc.reply("ok", "with a gift", caps=[gift])
            server_saw.append("accepted")
        except capkern.ReplyError:
            server_saw.append("refused")
            assert proc.reply("ok", "no gift") is True

    async def client(proc: Process) -> int:
        got = await proc.call("s", "x")
        return 0 if (got.body, len(got.caps)) in (("no gift", 0), ("with a gift", 1)) else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await finish(k, k.spawn(client, caps={"s": Grant(ep, rights)}))
        await finish(k, srv)
        assert k.stats.unsolicited_caps == (1 if rights == "w" else 0)
    assert server_saw == (["refused"] if rights == "w" else ["accepted"])


async def test_server_crashing_on_a_grantless_reply_fails_the_caller_with_the_cause(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    """Not ``ContractViolation ... bad reply`` on an endpoint that has no contract."""
    async def server(proc: Process) -> None:
        await proc.recv("service")
        proc.reply("ok", None, caps=[proc.new_notification()])  # raises ReplyError

    async def client(proc: Process) -> None:
        with pytest.raises(capkern.ReplyRefused, match="grant") as info:
            await proc.call("s", "x")
        assert not isinstance(info.value, capkern.ContractViolation)

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    status = await k.wait(srv)
    assert status.state == "failed" and "ReplyError" in str(status.error)


async def test_saved_reply_capability_survives_a_refused_reply(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    async def server(proc: Process) -> None:
        await proc.recv("service")
        saved = proc.save_caller("caller")
        with pytest.raises(capkern.ReplyError):
            proc.reply_to(saved, "ok", 1, caps=[proc.new_notification()])
        assert proc.reply_to("caller", "ok", 2) is True

    async def client(proc: Process) -> int:
        return 0 if (await proc.call("s", "x")).body == 2 else 1

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await finish(k, k.spawn(client, caps={"s": Grant(ep, "w")}))
    await finish(k, srv)


@pytest.mark.parametrize(("op", "n", "ok"), [("one", 1, True), ("one", 2, False),
                                             ("none", 1, False)])
async def test_contract_says_how_many_caps_a_reply_may_carry(
        op: str, n: int, ok: bool, autojump_clock: trio.abc.Clock) -> None:
    outcome: list[str] = []

    async def server(proc: Process) -> None:
        ep = proc.new_endpoint("give", contract=GIVE)
        await proc.send("boot", "ready", caps=[ep])
        await proc.recv(ep)
        gifts = [proc.new_notification() for _ in range(n)]
        try:
            proc.reply("ok", None, caps=gifts)
            outcome.append("sent")
        except capkern.ContractViolation as exc:
            outcome.append("refused")
            assert "reply carries at most" in str(exc)
            proc.reply("ok", None)

    async def client(proc: Process) -> None:
        got = await proc.call("give", op, {})
        outcome.append(f"got {len(got.caps)}")

    async with capkern.boot(paging=False) as k:
        boot_ep = k.new_endpoint("boot")
        srv = k.spawn(server, caps={"boot": Grant(boot_ep, "wg")})

        async def broker(proc: Process) -> None:
            msg = await proc.recv("boot")
            proc.name_slot(msg.caps[0], "give")
            await client(proc)

        await finish(k, k.spawn(broker, caps={"boot": Grant(boot_ep, "r")}))
        await finish(k, srv)
        assert k.stats.unsolicited_caps == (0 if ok else 1)
    assert outcome == ([ "sent", f"got {n}"] if ok else ["refused", "got 0"])


def test_op_declares_no_reply_caps_by_default() -> None:
    assert Op(Struct({"a": Int()})).reply_caps == 0
