"""Revoke means revoke: removing a capability cancels the IPC blocked on it (seL4).

A receiver blocked in ``recv``, a sender whose message is not yet delivered (``send``
or ``call``) and a waiter on a notification all fail with ``CapabilityRevoked`` when the
capability they blocked through is revoked (directly or through an ancestor), deleted,
or cleared by its domain's teardown; a message is never delivered with a badge that no
longer exists.  Moving a capability keeps it, and what waits on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import capkern
from capkern import Grant, Process


async def finish(k: capkern.Kernel, pid: int) -> capkern.ExitStatus:
    status = await k.wait(pid)
    assert status.ok, status
    return status


async def send(proc: Process, body: Any, caps: list[str] | None = None) -> None:
    await proc.send("s", "x", body, caps=caps or [])


async def nbsend(proc: Process, body: Any) -> None:
    proc.nbsend("s", "x", body)


async def signal(proc: Process) -> None:
    proc.signal("n")


async def settle() -> None:
    """Let every spawned domain run until it blocks (the clock autojumps)."""
    await trio.sleep(1)


# -- the ways a capability goes away ---------------------------------------------------

Remove = Callable[[capkern.Kernel, capkern.RootCap, capkern.RootCap], Awaitable[Any]]


async def _revoke_parent(k: capkern.Kernel, ep: capkern.RootCap,
                         minted: capkern.RootCap) -> None:
    await k.revoke(minted)  # the blocked party's capability is a child of ``minted``


async def _revoke_ancestor(k: capkern.Kernel, ep: capkern.RootCap,
                           minted: capkern.RootCap) -> None:
    await k.revoke(ep)  # the grandparent


async def _delete_parent(k: capkern.Kernel, ep: capkern.RootCap,
                         minted: capkern.RootCap) -> None:
    # deleting the parent splices its child upward: the child (and its IPC) survives
    k.delete(minted)


REMOVALS: dict[str, tuple[Remove, bool]] = {
    "revoke-parent": (_revoke_parent, True),
    "revoke-ancestor": (_revoke_ancestor, True),
    "delete-parent-keeps-child": (_delete_parent, False),
}


@pytest.mark.parametrize("how", list(REMOVALS))
async def test_receiver_blocked_in_recv_is_cancelled(
        how: str, autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    remove, cancels = REMOVALS[how]
    outcome: list[str] = []

    async def server(proc: Process) -> None:
        try:
            msg = await proc.recv("service")
            outcome.append(f"received {msg.body!r}")
        except capkern.CapabilityRevoked as exc:
            outcome.append("revoked")
            assert "revoked" in str(exc)

    k = bare_kernel
    ep = k.new_endpoint("svc")
    minted = k.mint(ep, "r")
    srv = k.spawn(server, caps={"service": Grant(minted, "r")})
    await settle()
    await remove(k, ep, minted)
    await settle()
    sender = k.spawn(nbsend, "after", caps={"s": Grant(ep, "w")})
    await finish(k, sender)
    await settle()
    if cancels:
        await finish(k, srv)
        assert outcome == ["revoked"]
        assert k.stats.ipc_cancelled == 1
    else:
        await finish(k, srv)
        assert outcome == ["received 'after'"]


@pytest.mark.parametrize("call", [False, True], ids=["send", "call"])
@pytest.mark.parametrize("how", ["revoke", "revoke-ancestor"])
async def test_blocked_sender_is_cancelled_and_its_badge_never_delivered(
        call: bool, how: str, autojump_clock: trio.abc.Clock) -> None:
    received: list[tuple[Any, int]] = []
    sender_saw: list[str] = []

    async def sender(proc: Process) -> None:
        try:
            if call:
                await proc.call("s", "x", "from badge 7")
            else:
                await proc.send("s", "x", "from badge 7")
            sender_saw.append("delivered")
        except capkern.CapabilityRevoked:
            sender_saw.append("revoked")

    async def server(proc: Process) -> None:
        for _ in range(1):
            msg = await proc.recv("service")
            received.append((msg.body, msg.badge))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("svc")
        badged = k.mint(ep, "w", badge=7)
        s = k.spawn(sender, caps={"s": Grant(badged, "w")})
        await settle()
        assert k.domains()[0].usage["queued"][0] == 1  # the blocked send is charged
        await (k.revoke(badged) if how == "revoke" else k.revoke(ep))
        await finish(k, s)
        assert sender_saw == ["revoked"]
        assert k.domains()[0].usage["queued"][0] == 0  # and released
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        other = k.spawn(lambda p: p.send("s", "x", "from badge 9"),
                        caps={"s": Grant(ep, "w", badge=9)})
        await finish(k, other)
        await finish(k, srv)
    assert received == [("from badge 9", 9)]  # badge 7 no longer exists: never delivered


async def test_notification_waiter_is_cancelled(autojump_clock: trio.abc.Clock) -> None:
    seen: list[str] = []

    async def waiter(proc: Process) -> None:
        try:
            await proc.wait("n")
            seen.append("woken")
        except capkern.CapabilityRevoked:
            seen.append("revoked")

    async with capkern.boot(paging=False) as k:
        n = k.new_notification("n")
        w = k.spawn(waiter, caps={"n": Grant(n, "r")})
        await settle()
        await k.revoke(n)
        await finish(k, w)
        sig = k.spawn(signal, caps={"n": Grant(n, "w")})
        await finish(k, sig)
    assert seen == ["revoked"]


async def test_deleting_the_capability_cancels_its_own_domains_blocked_recv(
        autojump_clock: trio.abc.Clock) -> None:
    """One task of a domain blocks in recv; another deletes the slot it uses."""
    seen: list[str] = []

    async def server(proc: Process) -> None:
        async def receive() -> None:
            try:
                await proc.recv("service")
                seen.append("received")
            except capkern.CapabilityRevoked as exc:
                seen.append("deleted" if "deleted" in str(exc) else str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.sleep(1)
            proc.delete("service")

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        await finish(k, k.spawn(server, caps={"service": Grant(ep, "r")}))
    assert seen == ["deleted"]


async def test_moving_the_capability_keeps_what_waits_on_it(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Any] = []

    async def server(proc: Process) -> None:
        async def receive() -> None:
            seen.append((await proc.recv("service")).body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.sleep(1)
            proc.move("service")  # a new slot; same capability

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await settle()
        await finish(k, k.spawn(send, "still", caps={"s": Grant(ep, "w")}))
        await finish(k, srv)
    assert seen == ["still"]


async def test_revoke_in_a_middle_domain_reaches_ipc_blocked_downstream(
        autojump_clock: trio.abc.Clock) -> None:
    """A hands B a capability by IPC, then revokes its own: B's recv is cancelled."""
    seen: list[str] = []

    async def middle(proc: Process) -> None:
        mine = proc.copy("ep", "r")
        await proc.send("out", "take", caps=[mine])
        await trio.sleep(1)
        assert await proc.revoke(mine) == 1

    async def downstream(proc: Process) -> None:
        msg = await proc.recv("in")
        try:
            await proc.recv(msg.caps[0])
            seen.append("received")
        except capkern.CapabilityRevoked:
            seen.append("revoked")

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("target")
        box = k.new_endpoint("box")
        d = k.spawn(downstream, caps={"in": Grant(box, "r")})
        m = k.spawn(middle, caps={"ep": Grant(ep, "rwg"), "out": Grant(box, "wg")})
        await finish(k, m)
        await finish(k, d)
    assert seen == ["revoked"]


async def test_killed_sender_message_is_never_delivered(autojump_clock: trio.abc.Clock) -> None:
    """Teardown of a domain blocked in send: its message (and badge) is gone."""
    got: list[Any] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        got.append((msg.body, msg.badge))

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        doomed = k.spawn(send, "ghost",
                         caps={"s": Grant(ep, "w", badge=5)})
        await settle()
        k.kill(doomed)
        assert (await k.wait(doomed)).state == "killed"
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await finish(k, k.spawn(send, "real",
                                caps={"s": Grant(ep, "w", badge=6)}))
        await finish(k, srv)
    assert got == [("real", 6)]


async def test_cap_attached_to_a_queued_message_and_revoked_is_not_transferred(
        autojump_clock: trio.abc.Clock) -> None:
    got: list[tuple[int, ...]] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        got.append(msg.caps)

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        gift = k.new_notification("gift")
        given = k.mint(gift, "rw")
        s = k.spawn(send, None, ["g"],
                    caps={"s": Grant(ep, "wg"), "g": Grant(given, "rw")})
        await settle()
        await k.revoke(given)  # the attached capability goes; the send's own cap stays
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        await finish(k, s)
        await finish(k, srv)
    assert got == [(0,)]


async def test_giver_teardown_splices_and_keeps_ipc_blocked_on_derived_caps(
        autojump_clock: trio.abc.Clock) -> None:
    """A domain's end clears only its own capabilities: a child it handed out is spliced
    onto its parent (not revoked), so IPC blocked through that child goes on."""
    seen: list[Any] = []

    async def giver(proc: Process) -> None:
        await proc.send("out", "take", caps=[proc.copy("ep", "r")])

    async def holder(proc: Process) -> None:
        msg = await proc.recv("in")
        seen.append((await proc.recv(msg.caps[0])).body)

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("target")
        box = k.new_endpoint("box")
        h = k.spawn(holder, caps={"in": Grant(box, "r")})
        await finish(k, k.spawn(giver, caps={"ep": Grant(ep, "rwg"), "out": Grant(box, "wg")}))
        await settle()  # the giver has ended; the holder is blocked through its child
        await finish(k, k.spawn(send, "alive", caps={"s": Grant(ep, "w")}))
        await finish(k, h)
        assert await k.revoke(ep) == 0  # the holder's copy went with its own teardown
    assert seen == ["alive"]
