"""The kernel's watchdog: deadlines of the kernel's calls to its servers.

A call made through an :class:`IpcPort` fails with ``PagerUnavailable`` exactly at its
deadline whether its message is still queued or already taken and unanswered; a reply
that comes later is dropped without harm; a call that ends (answered, revoked or
cancelled) leaves nothing armed behind.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern._proc import Process
from capkern.errors import CapabilityRevoked, PagerUnavailable
from capkern.mmu._ports import IpcPort
from capkern.mmu._watchdog import EXPIRE_STEP, CallTimer, Watchdog, _Queue

from .helpers import start_echo


async def mute(proc: Process) -> None:
    """Takes one call and never answers it."""
    await proc.recv("service")
    await trio.sleep_forever()


def _port(kernel: capkern.Kernel, cap: capkern.RootCap, watchdog: Watchdog) -> IpcPort:
    return IpcPort(kernel.root, kernel.root.cspace.lookup(cap.slot), watchdog)


def _armed(watchdog: Watchdog) -> int:
    return sum(len(q) for q in watchdog._queues.values())


async def _booted(kernel: capkern.Kernel) -> Watchdog:
    watchdog = Watchdog()
    kernel.start_soon(watchdog.run, name="watchdog")
    await trio.testing.wait_all_tasks_blocked()
    return watchdog


async def test_a_queued_call_fails_at_its_deadline_and_is_withdrawn(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        ep = kernel.new_endpoint("silent")  # nobody ever receives on it
        port = _port(kernel, ep, watchdog)
        start = trio.current_time()
        with pytest.raises(PagerUnavailable, match=r"within 1\.5s"):
            await port.call("ping", {}, 1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        endpoint = kernel.root.cspace.lookup(ep.slot).obj
        assert not endpoint.senders  # type: ignore[attr-defined]
        assert kernel.root.usage.queued == 0
        assert watchdog.expired == 1 and _armed(watchdog) == 0


async def test_a_taken_unanswered_call_fails_at_its_deadline(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        ep = kernel.new_endpoint("mute")
        kernel.spawn(mute, name="mute", caps={"service": capkern.Grant(ep, "r")})
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(PagerUnavailable):
            await _port(kernel, ep, watchdog).call("ping", {}, 0.25)
        assert trio.current_time() - start == pytest.approx(0.25)
        assert watchdog.expired == 1


async def test_a_late_reply_is_dropped_and_the_server_keeps_serving(
        capkern_clock: trio.testing.MockClock) -> None:
    replies: list[bool] = []

    async def slow(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            await trio.sleep(msg.body["delay"])
            replies.append(proc.reply("ok", {"n": msg.body["n"]}))

    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        ep = kernel.new_endpoint("slow")
        kernel.spawn(slow, name="slow", caps={"service": capkern.Grant(ep, "r")})
        port = _port(kernel, ep, watchdog)
        with pytest.raises(PagerUnavailable):
            await port.call("x", {"n": 1, "delay": 2.0}, 1.0)
        await trio.sleep(1.5)  # the late reply goes nowhere
        assert await port.call("x", {"n": 2, "delay": 0.1}, 1.0) == {"n": 2}
        assert watchdog.expired == 1
        assert kernel.status(kernel.pid_of("slow")) is None  # the server still runs
        assert replies == [False, True]  # the late one found its caller gone


async def test_calls_that_end_leave_nothing_armed(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        port = _port(kernel, start_echo(kernel), watchdog)
        for i in range(500):
            reply = await port.call("n", i, 2.0)
            assert reply["body"] == i
            assert _armed(watchdog) == 0  # nothing accumulates between calls
        before = trio.current_time()
        await trio.sleep(10)  # the watchdog wakes at a stale deadline, finds nothing
        assert trio.current_time() - before == pytest.approx(10)
        assert watchdog.expired == 0 and watchdog._wake_at == math.inf


async def test_a_shorter_timeout_wakes_a_watchdog_sleeping_on_a_longer_one(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        silent = kernel.new_endpoint("silent")
        port = _port(kernel, silent, watchdog)
        results: dict[str, float] = {}

        async def timed(name: str, timeout: float) -> None:
            start = trio.current_time()
            with pytest.raises(PagerUnavailable):
                await port.call(name, {}, timeout)
            results[name] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(timed, "long", 30.0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(timed, "short", 0.5)
        assert results == {"long": pytest.approx(30.0), "short": pytest.approx(0.5)}
        assert watchdog.expired == 2


async def test_a_cancelled_or_revoked_call_is_disarmed(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        held = kernel.new_endpoint("mute")
        kernel.spawn(mute, name="mute", caps={"service": capkern.Grant(held, "r")})
        with trio.move_on_after(0.1):  # the caller gives up first
            await _port(kernel, held, watchdog).call("ping", {}, 1.0)
        assert _armed(watchdog) == 0

        silent = kernel.new_endpoint("silent")
        derived = kernel.mint(silent, "w")
        port = _port(kernel, derived, watchdog)
        outcome: list[Any] = []

        async def caller() -> None:
            with pytest.raises(CapabilityRevoked):
                await port.call("ping", {}, 1.0)
            outcome.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            await kernel.revoke(silent)
        await trio.sleep(5)  # past every deadline: nothing left to expire
        assert outcome and watchdog.expired == 0 and _armed(watchdog) == 0


def test_expire_is_plain_logic_over_the_queues() -> None:
    """Without a loop: a timer past its deadline is failed once, a disarmed one never."""

    class Waits:
        def __init__(self) -> None:
            self.failed: list[str] = []

        def time_out(self, exc: Exception) -> bool:
            self.failed.append(str(exc))
            return True

    watchdog = Watchdog()
    waits = [Waits() for _ in range(3)]
    timers = []
    for i, (timeout, deadline) in enumerate(((1.0, 11.0), (1.0, 12.0), (3.0, 15.0))):
        timer = CallTimer(deadline, functools.partial(PagerUnavailable, f"call {i}"))
        timer.waiting = waits[i]
        queue = watchdog._queues.setdefault(timeout, _Queue())
        queue.append(timer)
        queue.live += 1
        timers.append(timer)
    watchdog.disarm(timers[1], 1.0)
    assert watchdog.expire(11.5) == 15.0  # call 0 failed, call 1 was disarmed
    assert [w.failed for w in waits] == [["call 0"], [], []]
    assert watchdog.expire(14.9) == 15.0
    assert watchdog.expire(15.0) == math.inf
    assert [w.failed for w in waits] == [["call 0"], [], ["call 2"]]
    assert watchdog.expired == 2 and _armed(watchdog) == 0


def test_expire_fails_at_most_a_step_of_calls_at_once() -> None:
    """Many deadlines passing together are failed in steps (the kernel is not held)."""
    failed: list[int] = []

    class Waits:
        def __init__(self, i: int) -> None:
            self.i = i

        def time_out(self, exc: Exception) -> bool:
            failed.append(self.i)
            return True

    watchdog = Watchdog()
    queue = watchdog._queues.setdefault(1.0, _Queue())
    n = 2 * EXPIRE_STEP + 5
    for i in range(n):
        timer = CallTimer(10.0, functools.partial(PagerUnavailable, "late"))
        timer.waiting = Waits(i)
        queue.append(timer)
        queue.live += 1
    assert watchdog.expire(10.0) == 10.0  # more left: come back at once
    assert failed == list(range(EXPIRE_STEP))
    assert watchdog.expire(10.0) == 10.0
    assert watchdog.expire(10.0) == math.inf
    assert failed == list(range(n)) and watchdog.expired == n and _armed(watchdog) == 0


async def test_hundreds_of_calls_failing_together_all_fail_on_time(
        capkern_clock: trio.testing.MockClock) -> None:
    async with capkern.boot(paging=False) as kernel:
        watchdog = await _booted(kernel)
        port = _port(kernel, kernel.new_endpoint("silent"), watchdog)
        ends: list[float] = []
        steps: list[int] = []

        async def caller() -> None:
            with pytest.raises(PagerUnavailable):
                await port.call("ping", {}, 1.0)
            ends.append(trio.current_time())

        async def bystander() -> None:  # runs between the watchdog's steps
            await trio.sleep_until(start + 1.0)
            while len(ends) < 300:
                steps.append(watchdog.expired)
                await trio.lowlevel.checkpoint()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(bystander)
        assert len(ends) == 300 and set(ends) == {start + 1.0}
        assert any(0 < s < 300 for s in steps)  # it ran between the watchdog's steps
        assert watchdog.expired == 300
