"""The kernel's direct call (``ipc.call_now``): an ``IpcPort`` hands its request to a
server already waiting, with no coroutine of ``ipc.send``'s own, after its own
cancellation checkpoint.  What must hold as on the full path: a cancelled caller's
request is never delivered; a traced call, a removed capability or a server that is not
waiting take the full ``send`` (nothing changes before); the answer, the deadline and the
statistics are the same."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from capkern import Grant, Kernel, Process
from capkern import _ipc as ipc
from capkern._cspace import Cap
from capkern.mmu._ports import IpcPort
from capkern.mmu._watchdog import Watchdog


def _setup(kernel: Kernel, got: list[Any], *, serve: bool = True) -> tuple[IpcPort, Cap]:
    """An IpcPort from the root to an echo server that records what it receives."""

    async def echo(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            got.append(msg.body)
            proc.reply("ok", msg.body)

    ep = kernel.new_endpoint("echo")
    if serve:
        kernel.spawn(echo, caps={"service": Grant(ep, "r")})
    watchdog = Watchdog()
    kernel.start_soon(watchdog.run, name="watchdog")
    cap = kernel.root.cspace.lookup(ep.slot)
    return IpcPort(kernel.root, cap, watchdog), cap


async def test_a_call_to_a_waiting_server_is_handed_over_directly(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    got: list[Any] = []
    port, _cap = _setup(bare_kernel, got)
    await trio.testing.wait_all_tasks_blocked()
    calls = bare_kernel.stats.ipc_calls
    for i in range(3):
        assert await port.call("x", {"i": i}, 1.0) == {"i": i}
    assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert bare_kernel.stats.ipc_calls == calls + 3
    assert not [t for q in port.watchdog._queues.values() for t in q if t.armed]


async def test_call_now_changes_nothing_unless_a_receiver_waits(
        bare_kernel: Kernel) -> None:
    got: list[Any] = []
    _port, cap = _setup(bare_kernel, got, serve=False)
    root = bare_kernel.root
    msg = ipc.kernel_message(root, cap, "x", 1)
    calls = bare_kernel.stats.ipc_calls
    assert ipc.call_now(root, cap, msg, None) is None  # nobody receives
    assert bare_kernel.stats.ipc_calls == calls
    assert not cap.obj.senders  # type: ignore[attr-defined]  # not queued either


async def test_a_traced_call_takes_the_full_send_and_is_recorded(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    got: list[Any] = []
    port, cap = _setup(bare_kernel, got)
    await trio.testing.wait_all_tasks_blocked()
    root = bare_kernel.root
    bare_kernel.trace.enabled = True
    try:
        assert ipc.call_now(root, cap, ipc.kernel_message(root, cap, "x", 1), None) is None
        assert cap.obj.receivers  # type: ignore[attr-defined]  # the server still waits
        assert await port.call("x", 2, 1.0) == 2
    finally:
        bare_kernel.trace.enabled = False
    assert got == [2]
    assert any(r.op == "call" for r in bare_kernel.trace.records)


async def test_a_removed_capability_is_refused_and_nothing_delivered(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    got: list[Any] = []
    port, cap = _setup(bare_kernel, got)
    await trio.testing.wait_all_tasks_blocked()
    root = bare_kernel.root
    msg = ipc.kernel_message(root, cap, "x", 1)
    root.cspace.delete(cap.slot)
    assert ipc.call_now(root, cap, msg, None) is None
    with pytest.raises(Exception, match="removed"):
        await port.call("x", 1, 1.0)
    await trio.testing.wait_all_tasks_blocked()
    assert got == []


async def test_a_cancelled_caller_delivers_nothing(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    got: list[Any] = []
    port, _cap = _setup(bare_kernel, got)
    await trio.testing.wait_all_tasks_blocked()
    with trio.CancelScope() as scope:
        scope.cancel()
        await port.call("x", "never", 1.0)
    assert scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert got == []  # withdrawn before the hand-over: the server never saw it
    assert await port.call("x", "next", 1.0) == "next"  # and the server still waits
    assert got == ["next"]
