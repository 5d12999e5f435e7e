"""The pager link's rule -- silence, a dead channel or a reply out of contract is
``PagerUnavailable`` (counted), a typed refusal is ``ServerError`` -- holds the same
whether the link hands the call to an ``IpcPort`` (which applies the rule inside its
own call, so the link adds no coroutine frame to a fault) or wraps any other port."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import Grant, Process
from capkern._protocols import PAGER
from capkern._trace import Counters
from capkern.errors import PagerUnavailable, ServerError
from capkern.kernel import Kernel
from capkern.mmu._ports import IpcPort, PagerLink
from capkern.mmu._watchdog import Watchdog
from capkern.testing.ports import fake_pager


async def refuse_then_vanish(proc: Process) -> None:
    """A pager that refuses its first call with a declared reason, then takes a second
    call and ends without answering it."""
    await proc.recv("service")
    proc.reply_error("not_found", "no such page")
    await proc.recv("service")


async def test_a_link_over_an_ipc_port_calls_it_directly_and_keeps_the_rule(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    kernel = bare_kernel
    ep = kernel.new_endpoint("pager", PAGER)
    watchdog = Watchdog()
    kernel.start_soon(watchdog.run, name="watchdog")
    stats = Counters()
    link = PagerLink(IpcPort(kernel.root, kernel.root.cspace.lookup(ep.slot), watchdog),
                     0.05, stats)
    call = link.call("fetch", {"handle": 1})
    assert call.cr_code is IpcPort.call.__code__  # type: ignore[attr-defined]  # the port's own
    with pytest.raises(PagerUnavailable, match="did not answer 'fetch'"):
        await call  # nobody receives: silence until the deadline
    assert (stats.pager_timeouts, stats.pager_protocol_errors) == (1, 0)

    kernel.spawn(refuse_then_vanish, name="pager", caps={"service": Grant(ep, "r")})
    with pytest.raises(ServerError) as refused:  # a typed refusal passes as it is
        await link.call("fetch", {"handle": 1})
    assert refused.value.reason == "not_found"
    with pytest.raises(PagerUnavailable, match="pager failed 'fetch'"):
        await link.call("fetch", {"handle": 2})  # the server ended: its reply is gone
    assert (stats.pager_timeouts, stats.pager_protocol_errors) == (1, 1)
    assert link.calls == 3


async def test_a_link_over_another_port_applies_the_same_rule(
        capkern_clock: trio.testing.MockClock) -> None:
    async def out_of_contract(body: Any) -> Any:
        return {"blob": 7}  # not bytes: the port's contract refuses the reply

    async def refuse(body: Any) -> Any:
        raise ServerError("not_found", "no such page")

    async def silent(body: Any) -> Any:
        await trio.sleep_forever()

    stats = Counters()
    for handler in (out_of_contract, refuse, silent):
        port = fake_pager({"fetch": handler})
        link = PagerLink(port, 0.05, stats)
        with pytest.raises(ServerError if handler is refuse else PagerUnavailable):
            await link.call("fetch", {"handle": 1})
    assert (stats.pager_timeouts, stats.pager_protocol_errors) == (1, 1)


async def test_an_ipc_ports_timeout_errors_name_the_call_and_stay_few(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    from capkern.mmu._ports import LATE_CACHE

    kernel = bare_kernel
    watchdog = Watchdog()
    kernel.start_soon(watchdog.run, name="watchdog")
    port = IpcPort(kernel.root, kernel.root.cspace.lookup(kernel.new_endpoint("mute").slot),
                   watchdog)
    for label, deadline in (("a", 0.5), ("b", 0.5), ("a", 0.25), ("a", 0.5)):
        with pytest.raises(PagerUnavailable, match=rf"'{label}' within {deadline}s"):
            await port.call(label, {}, deadline)
    for i in range(3 * LATE_CACHE):  # ever new labels and deadlines: the cache stays bounded
        with pytest.raises(PagerUnavailable, match=rf"'x{i}' within"):
            await port.call(f"x{i}", {}, 0.01 + i / 1000)
    assert len(port._late) <= LATE_CACHE
    assert all(len(lates) <= LATE_CACHE for lates in port._late.values())
