"""A receive started before its capability was removed takes nothing.

``Process.recv`` looks the capability up when called and returns the kernel's
coroutine; a program may hold that coroutine and await it later.  If the capability was
deleted, or revoked by the domain it was derived from, in between, the receive must
fail with :class:`CapabilityRevoked` -- neither take a queued message nor block on the
endpoint where later messages would reach a domain that no longer holds a capability
to it (revoke is complete).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process


@pytest.mark.parametrize("queued", [False, True])
@pytest.mark.parametrize("how", ["delete", "revoke"])
async def test_a_held_receive_fails_once_its_capability_is_gone(
        how: str, queued: bool, capkern_clock: trio.testing.MockClock) -> None:
    stolen: list[Any] = []
    errors: list[type[Exception]] = []
    ready, removed, sent = trio.Event(), trio.Event(), trio.Event()

    async def owner(proc: Process) -> None:
        ep = proc.new_endpoint("svc")
        await proc.send("to_attacker", "cap", caps=[proc.copy(ep, "r")])
        await ready.wait()
        if how == "revoke":
            await proc.revoke(ep)  # removes the attacker's copy
            removed.set()
        await removed.wait()
        async with trio.open_nursery() as nursery:
            if queued:
                nursery.start_soon(proc.send, ep, "secret", {"pin": 1234})
                await trio.sleep(1)
                sent.set()
            else:
                sent.set()
                await trio.sleep(1)
                proc.nbsend(ep, "secret", {"pin": 1234})
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    async def attacker(proc: Process) -> None:
        slot = (await proc.recv("from_owner")).caps[0]
        held = proc.recv(slot)
        if how == "delete":
            proc.delete(slot)
            removed.set()
        ready.set()
        await sent.wait()
        try:
            with trio.move_on_after(5):
                stolen.append((await held).body)
        except capkern.CapkernError as exc:
            errors.append(type(exc))

    async with capkern.boot(paging=False) as k:
        reg = k.new_endpoint("reg")
        o = k.spawn(owner, caps={"to_attacker": Grant(reg, "wg")})
        a = k.spawn(attacker, caps={"from_owner": Grant(reg, "rg")})
        assert (await k.wait(a)).ok
        assert (await k.wait(o)).ok
    assert stolen == []
    assert errors == [capkern.CapabilityRevoked]
