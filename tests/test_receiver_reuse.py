"""A domain's receiver record is reused: once a sender has taken a blocked receive off
its endpoint, the record is the domain's spare and its next blocking receive fills it in
again (no new record per request).  Reuse must not carry anything over: the next receive
waits on its own endpoint through its own capability, so revoking the capability an
earlier receive used fails nothing, revoking the current one fails exactly that
receive, and several tasks of one domain receiving at once each get their own message."""

from __future__ import annotations

import trio
import trio.testing

import capkern
from capkern import Grant, Process


async def _finish(k: capkern.Kernel, pid: int) -> None:
    status = await k.wait(pid)
    assert status.ok, status


async def _senders(proc: Process, *plan: tuple[str, str]) -> None:
    """Send each (slot, body) in turn, once someone is waiting for it."""
    for slot, body in plan:
        await proc.send(slot, "m", body)


async def test_a_reused_receiver_waits_on_its_new_endpoint_only(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    """First receive on A (its record becomes the spare), then on B: revoking A's
    capability must not fail the receive on B; revoking B's must."""
    outcome: list[str] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("a")
        outcome.append(f"a got {msg.body}")
        try:
            msg = await proc.recv("b")
            outcome.append(f"b got {msg.body}")
        except capkern.CapabilityRevoked:
            outcome.append("b revoked")

    k = bare_kernel
    ep_a, ep_b = k.new_endpoint("a"), k.new_endpoint("b")
    a_cap, b_cap = k.mint(ep_a, "r"), k.mint(ep_b, "r")
    srv = k.spawn(server, caps={"a": Grant(a_cap, "r"), "b": Grant(b_cap, "r")})
    await trio.sleep(1)
    await _finish(k, k.spawn(_senders, ("a", "one"), caps={"a": Grant(ep_a, "w")}))
    await trio.sleep(1)  # the server now blocks on B with the reused record
    await k.revoke(a_cap)
    await trio.sleep(1)
    assert outcome == ["a got one"]  # revoking A touched nothing
    await k.revoke(b_cap)
    await _finish(k, srv)
    assert outcome == ["a got one", "b revoked"]
    assert k.stats.ipc_cancelled == 1


async def test_a_reused_receiver_gets_the_next_message_on_its_endpoint(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    got: list[object] = []

    async def server(proc: Process) -> None:
        for slot in ("a", "b", "a", "b"):
            got.append((slot, (await proc.recv(slot)).body))

    k = bare_kernel
    ep_a, ep_b = k.new_endpoint("a"), k.new_endpoint("b")
    srv = k.spawn(server, caps={"a": Grant(ep_a, "r"), "b": Grant(ep_b, "r")})
    await trio.sleep(1)
    snd = k.spawn(_senders, ("a", 1), ("b", 2), ("a", 3), ("b", 4),
                  caps={"a": Grant(ep_a, "w"), "b": Grant(ep_b, "w")})
    await _finish(k, snd)
    await _finish(k, srv)
    assert got == [("a", 1), ("b", 2), ("a", 3), ("b", 4)]


async def test_tasks_of_one_domain_receiving_at_once_each_get_their_own(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    """Two tasks of one domain block at the same time (one record is the spare, the
    other new); rounds of sends must reach the task waiting on each endpoint."""
    got: list[tuple[str, object]] = []

    async def server(proc: Process) -> None:
        async def loop(slot: str) -> None:
            for _ in range(3):
                got.append((slot, (await proc.recv(slot)).body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop, "a")
            nursery.start_soon(loop, "b")

    k = bare_kernel
    ep_a, ep_b = k.new_endpoint("a"), k.new_endpoint("b")
    srv = k.spawn(server, caps={"a": Grant(ep_a, "r"), "b": Grant(ep_b, "r")})
    await trio.sleep(1)
    plan = [("b", "b0"), ("a", "a0"), ("a", "a1"), ("b", "b1"), ("b", "b2"), ("a", "a2")]
    await _finish(k, k.spawn(_senders, *plan,
                             caps={"a": Grant(ep_a, "w"), "b": Grant(ep_b, "w")}))
    await _finish(k, srv)
    assert sorted(got) == sorted((slot, body) for slot, body in plan)
    assert [body for slot, body in got if slot == "a"] == ["a0", "a1", "a2"]
    assert [body for slot, body in got if slot == "b"] == ["b0", "b1", "b2"]


async def test_a_cancelled_reused_receive_leaves_no_receiver_behind(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    outcome: list[str] = []

    async def server(proc: Process) -> None:
        outcome.append(f"got {(await proc.recv('service')).body}")
        with trio.move_on_after(5):  # blocks with the reused record, then is cancelled
            await proc.recv("service")
        # nobody waits now: a non-blocking send finds no receiver
        outcome.append("delivered" if proc.nbsend("out", "m", 2) else "dropped")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r"), "out": Grant(ep, "w")})
    await trio.sleep(1)
    await _finish(k, k.spawn(_senders, ("s", 1), caps={"s": Grant(ep, "w")}))
    await _finish(k, srv)
    assert outcome == ["got 1", "dropped"]
