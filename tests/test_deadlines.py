"""Deadlines of the kernel's calls to its (untrusted) servers, under attack.

The kernel's calls to the pager get their deadlines from one watchdog task
(``mmu/_watchdog.py``) instead of a cancel scope per call.  These scenarios attack that
path with real pagers in the pager's place: answers just before, exactly at and just
after the deadline; a pager that keeps some callers waiting forever while it answers the
rest (calls end out of order); many processes faulting at once on a hung pager; a process
killed in the middle of a call; a hung member of a mirrored pager set; and a kernel shut
down while calls are armed.  Each asserts what must hold: no wrong data, a typed fault
within a bounded time, the rest of the system running on, and nothing left armed.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import programs
from capkern._proc import Process
from capkern.mmu._ports import IpcPort
from capkern.mmu._watchdog import Watchdog
from capkern.pagerset._port import PagerSetPort
from capkern.servers.pager import pager_server
from capkern.testing import (
    AttackPager,
    Evidence,
    Hang,
    Only,
    Slow,
    Tamper,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    expected_pages,
    is_typed_fault,
    run_workload,
)

DEADLINE = 1.0
PAGES, ROUNDS, RAM = 12, 2, 4


def _watchdogs(kernel: capkern.Kernel) -> list[Watchdog]:
    """The watchdog(s) behind the kernel's pager port (one per member of a set)."""
    assert kernel.vm is not None
    port = kernel.vm.pager.port
    ports = [m.port for m in port.members] if isinstance(port, PagerSetPort) else [port]
    return list({id(p.watchdog): p.watchdog for p in ports if isinstance(p, IpcPort)}.values())


def _armed(kernel: capkern.Kernel) -> int:
    """Timers still queued in the kernel's watchdog (armed or waiting to be dropped)."""
    return sum(len(q) for w in _watchdogs(kernel) for q in w._queues.values())


def _live(kernel: capkern.Kernel) -> int:
    """Timers still armed: calls the watchdog still has to fail."""
    return sum(t.armed for w in _watchdogs(kernel) for q in w._queues.values() for t in q)


async def _alive(kernel: capkern.Kernel) -> None:
    """The kernel still serves IPC and paging that needs no swapped page."""
    ep = kernel.new_endpoint("echo-after")
    kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
    client = kernel.spawn(programs.echo_client, 3, caps={"server": capkern.Grant(ep, "w")})
    assert (await kernel.wait(client)).ok
    assert (await kernel.wait(kernel.spawn(programs.sequential, 0, 1, 1))).ok


def _plain(procs: int) -> list[bytes]:
    return [p for s in range(procs) for p in expected_pages(s, PAGES, ROUNDS)]


# -- answers around the deadline -----------------------------------------------------------


@pytest.mark.parametrize("delay", [DEADLINE - 1e-6, DEADLINE, DEADLINE + 1e-6],
                         ids=["just-before", "exactly-at", "just-after"])
async def test_a_fetch_answered_around_its_deadline(delay: float,
                                                    capkern_clock: trio.testing.MockClock,
                                                    ) -> None:
    """One process (its faults one at a time), every fetch answered ``delay`` late: an
    answer before the deadline is taken, one after it is refused as PagerUnavailable at
    the deadline; exactly at it, either -- never wrong data, never a crash."""
    evidence = Evidence()
    pager = attack_pager(Only(Slow(delay), labels=["fetch"]), evidence=evidence)
    async with capkern.boot(pager=pager, ram_pages=RAM, pager_deadline=DEADLINE) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS, seeds=[0])
        assert evidence.tried["slow"] >= 1
        await _alive(kernel)
        await trio.sleep(2 * DEADLINE)  # late answers have landed by now
        assert _live(kernel) == 0
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(evidence, _plain(1))
    (status,) = statuses
    if delay < DEADLINE:
        assert status.ok, status
        assert kernel.stats.pager_timeouts == 0
    elif delay > DEADLINE:
        assert not status.ok and "PagerUnavailable" in (status.error or ""), status
        assert kernel.stats.pager_timeouts >= 1
    else:
        assert status.ok or is_typed_fault(status), status


# -- out of order: some callers held forever, the rest answered ------------------------------


class HoldEvery(Tamper):
    """Keep the caller of every ``n``-th fetch waiting forever (its reply capability saved,
    never used) while serving every other request at once: the kernel's calls end out of
    order, the held ones first in its watchdog's queue."""

    name = "hold"

    def __init__(self, n: int) -> None:
        self.n = n
        self.fetches = 0

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label != "fetch":
            return False
        self.fetches += 1
        if self.fetches % self.n:
            return False
        pager.proc.save_caller()
        return True


async def test_callers_held_forever_fail_at_their_own_deadlines_while_others_run_on(
        capkern_clock: trio.testing.MockClock) -> None:
    evidence = Evidence()
    hold = HoldEvery(3)
    procs = 4
    ends: dict[int, float] = {}
    async with capkern.boot(pager=attack_pager(hold, evidence=evidence), ram_pages=RAM,
                            pager_deadline=DEADLINE) as kernel:
        start = trio.current_time()
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(procs))
        for status in statuses:
            ends[status.pid] = trio.current_time() - start
        assert hold.fetches >= 3
        await _alive(kernel)
        assert _live(kernel) == 0
        await trio.sleep(DEADLINE)
        assert _armed(kernel) == 0  # nothing accumulates behind a held call for good
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(evidence, _plain(procs))
    assert all(s.ok or is_typed_fault(s) for s in statuses)
    assert any("PagerUnavailable" in (s.error or "") for s in statuses)
    assert kernel.stats.pager_timeouts >= 1


# -- many processes on a hung pager -----------------------------------------------------------


@pytest.mark.parametrize("labels", [("fetch",), ("fetch", "store", "evict", "discard")],
                         ids=["fetch", "everything"])
async def test_many_processes_fault_on_a_hung_pager_and_all_fail_in_bounded_time(
        labels: tuple[str, ...], capkern_clock: trio.testing.MockClock) -> None:
    procs = 16
    evidence = Evidence()
    async with capkern.boot(pager=attack_pager(Hang(labels), evidence=evidence), ram_pages=RAM,
                            pager_deadline=DEADLINE) as kernel:
        start = trio.current_time()
        pids = [kernel.spawn(programs.sequential, PAGES, ROUNDS, seed, name=f"w{seed}")
                for seed in range(procs)]
        elapsed: list[float] = []
        statuses = []
        for pid in pids:
            statuses.append(await kernel.wait(pid))
            elapsed.append(trio.current_time() - start)
        assert max(elapsed) <= 4 * DEADLINE, elapsed
        await _alive(kernel)
        await trio.sleep(2 * DEADLINE)  # the kernel's own calls (discards) end too
        assert _live(kernel) == 0
        assert _armed(kernel) == 0
    assert evidence.tried["hang"] >= 1
    assert all(is_typed_fault(s) for s in statuses), statuses  # a hung pager holds pages
    assert all("did not answer" in (s.error or "") for s in statuses), statuses
    assert_no_plaintext(evidence, _plain(procs))


# -- a process killed in the middle of a call -------------------------------------------------


async def test_killing_a_process_mid_call_disarms_its_call(
        capkern_clock: trio.testing.MockClock) -> None:
    """The pager holds the victim's fetch (and serves everything else, so the kernel's
    own calls -- the discards of the victim's pages -- end on time): killing the victim
    disarms its call at once; nothing fires at its deadline."""
    evidence = Evidence()
    async with capkern.boot(pager=attack_pager(HoldEvery(1), evidence=evidence), ram_pages=RAM,
                            pager_deadline=DEADLINE) as kernel:
        victim = kernel.spawn(programs.sequential, PAGES, ROUNDS, 0, name="victim")
        while not evidence.tried["hold"]:  # until its fetch is taken and held
            await trio.sleep(DEADLINE / 100)
        assert _live(kernel) == 1
        expired = sum(w.expired for w in _watchdogs(kernel))
        kernel.kill(victim)
        status = await kernel.wait(victim)
        assert status.state == "killed"
        assert _live(kernel) == 0  # disarmed at once, not at its deadline
        await trio.sleep(2 * DEADLINE)
        assert sum(w.expired for w in _watchdogs(kernel)) == expired  # nothing fired late
        assert _armed(kernel) == 0
        await _alive(kernel)


# -- a hung member of a mirrored pager set ------------------------------------------------------


SETS: dict[str, dict[str, Any]] = {"mirror": {"pager_set": "mirror", "copies": 2},
                                   "erasure": {"pager_set": "erasure", "needed": 2}}


@pytest.mark.parametrize("mode", sorted(SETS))
@pytest.mark.parametrize("hung", [0, 1], ids=["first-member", "second-member"])
async def test_a_hung_set_member_costs_time_only(
        hung: int, mode: str, capkern_clock: trio.testing.MockClock) -> None:
    """One member of a pager set never answers anything (the first is the policy's
    primary): its calls are failed at their deadlines or abandoned by the hedge, and
    every process finishes with its own data."""
    evidence = Evidence()
    members: list[Any] = [pager_server, pager_server, pager_server]
    members[hung] = attack_pager(Hang(("fetch", "store", "evict", "discard", "observe")),
                                 evidence=evidence)
    async with capkern.boot(pagers=members, ram_pages=RAM, pager_deadline=DEADLINE,
                            **SETS[mode]) as kernel:
        start = trio.current_time()
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(3))
        elapsed = trio.current_time() - start
        await trio.sleep(DEADLINE)
        assert _live(kernel) == 0
        assert _armed(kernel) == 0
    assert evidence.tried["hang"] >= 1
    assert_no_wrong_reads(statuses)
    assert all(s.ok for s in statuses), statuses
    assert elapsed < 60 * DEADLINE


# -- shutdown with calls armed --------------------------------------------------------------------


async def test_shutdown_with_calls_armed_neither_hangs_nor_leaves_a_task(
        capkern_clock: trio.testing.MockClock) -> None:
    evidence = Evidence()
    async with capkern.boot(pager=attack_pager(Hang(), evidence=evidence), ram_pages=RAM,
                            pager_deadline=1000.0) as kernel:
        for seed in range(4):
            kernel.spawn(programs.sequential, PAGES, ROUNDS, seed)
        while not evidence.tried["hang"]:
            await trio.sleep(0.01)
        assert _live(kernel) >= 1
        before = trio.current_time()
    assert trio.current_time() - before < 1.0  # left at once, not at the deadline
    assert _live(kernel) == 0
    root = trio.lowlevel.current_root_task()
    assert root is not None
    tasks = [t for n in root.child_nurseries for t in n.child_tasks]
    while tasks:  # every task still running in this trio run: none of the kernel's
        task = tasks.pop()
        assert not task.name.startswith("capkern"), task.name
        tasks += [t for n in task.child_nurseries for t in n.child_tasks]


# -- the watchdog's own clock: stale deadlines ------------------------------------------------


async def _mute(proc: Process) -> None:
    while True:
        await proc.recv("service")
        proc.save_caller()


async def test_a_call_armed_while_the_watchdog_sleeps_on_a_stale_deadline_fails_on_time(
        capkern_clock: trio.testing.MockClock) -> None:
    """A quick call leaves the watchdog asleep until its (now stale) deadline; a call
    armed later, with the same or a longer timeout, fails exactly at its own deadline --
    the autojump clock stops at the stale one on the way, which changes nothing."""
    async with capkern.boot(paging=False) as kernel:
        watchdog = Watchdog()
        kernel.start_soon(watchdog.run, name="watchdog")
        echo = kernel.new_endpoint("echo")
        kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(echo, "r")})
        mute = kernel.new_endpoint("mute")
        kernel.spawn(_mute, caps={"service": capkern.Grant(mute, "r")})
        await trio.testing.wait_all_tasks_blocked()
        root = kernel.root.cspace
        quick = IpcPort(kernel.root, root.lookup(echo.slot), watchdog)
        held = IpcPort(kernel.root, root.lookup(mute.slot), watchdog)
        for timeout, gap, short in [(2.0, 1.0, 2.0), (2.0, 1.5, 3.0), (5.0, 0.5, 1.0),
                                    (1.0, 0.999, 1.0)]:
            await quick.call("x", 1, timeout)  # arms, answers at once: stale deadline
            await trio.sleep(gap)
            began = trio.current_time()
            with pytest.raises(capkern.errors.PagerUnavailable):
                await held.call("y", 2, short)
            assert trio.current_time() - began == pytest.approx(short, abs=1e-9)
        assert watchdog.expired == 4
        assert not any(t.armed for q in watchdog._queues.values() for t in q)


# -- memory: timers of ended calls behind a held one -----------------------------------------


class HoldFirst(Tamper):
    """Keep the caller of the first fetch waiting forever; serve everything else at once."""

    name = "hold-first"

    def __init__(self) -> None:
        self.held = False

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label != "fetch" or self.held:
            return False
        self.held = True
        pager.proc.save_caller()
        return True


async def test_a_held_call_does_not_make_the_kernel_keep_every_later_calls_timer(
        capkern_clock: trio.testing.MockClock) -> None:
    """A call held first in the watchdog's queue must not pin the timer of every call
    that ends after it until its deadline: the pager would choose how much kernel memory
    dead timers take (calls per deadline).  The queue stays of the order of the calls
    still armed, however many ended behind the held one."""
    hold = HoldFirst()
    async with capkern.boot(pager=attack_pager(hold), ram_pages=RAM,
                            pager_deadline=600.0) as kernel:
        held = kernel.spawn(programs.sequential, PAGES, ROUNDS, 0, name="held")
        while not hold.held:
            await trio.sleep(0.01)
        calls = kernel.stats.ipc_calls
        statuses = await run_workload(kernel, programs.sequential, PAGES, 8, seeds=range(1, 4))
        assert all(s.ok for s in statuses)
        ended = kernel.stats.ipc_calls - calls
        assert ended > 500  # many calls ended while the held one waits
        assert _live(kernel) >= 1 and kernel.status(held) is None
        assert _armed(kernel) <= 2 * _live(kernel) + 64, (_armed(kernel), ended)
        kernel.kill(held)
        await kernel.wait(held)
    assert_no_wrong_reads(statuses)


class _Wait:
    """What a call waits on, as the watchdog sees it: counts how often it was failed."""

    def __init__(self) -> None:
        self.failed = 0

    def time_out(self, exc: Exception) -> bool:
        self.failed += 1
        return True


@pytest.mark.parametrize("seed", range(8))
async def test_out_of_order_ends_keep_every_deadline_and_bound_the_queues(
        seed: int, capkern_clock: trio.testing.MockClock) -> None:
    """Random arms, out-of-order disarms and expiries (the watchdog's logic without its
    task): every call still armed at its deadline is failed exactly once, and then;
    no ended call ever is; each queue stays in deadline order, counts its armed timers
    right, and is never much longer than twice its armed calls."""
    import random

    rng = random.Random(seed)
    watchdog = Watchdog()
    calls: list[tuple[Any, _Wait, float]] = []  # (timer, wait, timeout)
    ended: set[int] = set()
    for _ in range(3000):
        op = rng.random()
        if op < 0.5:
            timeout = rng.choice([1.0, 2.0, 0.5])
            timer = watchdog.arm(timeout, lambda: capkern.errors.PagerUnavailable("late"))
            wait = _Wait()
            timer.waiting = wait
            calls.append((timer, wait, timeout))
        elif op < 0.9 and calls:
            i = rng.randrange(len(calls))
            if i not in ended:
                timer, wait, timeout = calls[i]
                watchdog.disarm(timer, timeout)
                ended.add(i)
        else:
            await trio.sleep(rng.choice([0.0, 0.01, 0.3, 0.7]))
            now = trio.current_time()
            watchdog.expire(now)
            for i, (timer, wait, _) in enumerate(calls):
                if i in ended:
                    assert wait.failed == 0 or timer.deadline <= now
                elif timer.deadline <= now:
                    assert wait.failed == 1 and not timer.armed
                    ended.add(i)  # failed: its caller disarms it
                    watchdog.disarm(timer, calls[i][2])
                else:
                    assert wait.failed == 0 and timer.armed
        for queue in watchdog._queues.values():
            deadlines = [t.deadline for t in queue]
            assert deadlines == sorted(deadlines)
            assert queue.live == sum(t.armed for t in queue)
            assert len(queue) <= 2 * queue.live + 64 + 1
    assert all(wait.failed <= 1 for _, wait, _ in calls)


# -- a hung pager in a child OS process (real clock) -------------------------------------------


async def test_a_hung_child_pager_fails_faults_within_their_deadline() -> None:
    """``isolation="process"``: the pager is a real child process that never answers a
    fetch.  The kernel's calls to its proxy fail at their deadline (the watchdog, on
    the real clock), processes that need no page from it finish, nothing stays armed,
    and the kernel shuts down at once.  Real child processes: no autojump clock, every
    wait bounded by ``fail_after``."""
    deadline = 0.5
    with trio.fail_after(30):
        async with capkern.boot(isolation="process", pager=attack_pager(Hang()), ram_pages=RAM,
                                pager_deadline=deadline) as kernel:
            start = trio.current_time()
            victim = kernel.spawn(programs.sequential, PAGES, ROUNDS, 0, name="victim")
            status = await kernel.wait(victim)
            elapsed = trio.current_time() - start
            # its held fetch, or (on a loaded machine) a store queued behind it
            assert is_typed_fault(status) and "did not answer" in (status.error or ""), status
            assert elapsed < 10 * deadline, elapsed  # one deadline (and a busy machine)
            ep = kernel.new_endpoint("echo-after")
            kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
            client = kernel.spawn(programs.echo_client, 3,
                                  caps={"server": capkern.Grant(ep, "w")})
            assert (await kernel.wait(client)).ok
            assert kernel.stats.pager_timeouts >= 1
            with trio.fail_after(20 * deadline):
                while _live(kernel):  # the kernel's own calls queued behind it end too
                    await trio.sleep(deadline / 3)
            closing = trio.current_time()
        assert trio.current_time() - closing < 5.0


# -- late but honest: the kernel's state after calls it gave up on ----------------------------

PAGE = 4096


async def _retrying(proc: Process, pages: int, seed: int) -> int:
    """Write and read back its pages in rounds, retrying an access that failed with a
    typed error other than an integrity fault; exit code: wrong reads (or 100 if an
    access never succeeded)."""
    base = proc.mmap(pages * PAGE)
    shadow: dict[int, bytes] = {}

    async def retry(op: Any) -> Any:
        for _ in range(50):
            try:
                return await op()
            except capkern.errors.IntegrityFault:
                raise
            except capkern.errors.CapkernError:
                continue
        proc.exit(100)

    wrong = 0
    for r in range(4):
        for i in range(pages):
            data = bytes([(seed * 7 + i * 3 + r) % 251 + 1]) * 32
            await retry(lambda i=i, data=data: proc.write(base + i * PAGE, data))
            shadow[i] = data
        for i in range(pages):
            got = await retry(lambda i=i: proc.read(base + i * PAGE, 32))
            wrong += got != shadow[i]
    return wrong


@pytest.mark.parametrize("delay", [DEADLINE, DEADLINE + 0.2], ids=["at", "after"])
@pytest.mark.parametrize("every", [4, 8])
async def test_stores_and_fetches_answered_late_leave_no_stale_state(
        delay: float, every: int, capkern_clock: trio.testing.MockClock) -> None:
    """An honest pager that answers every ``every``-th store or fetch at (or after) its
    deadline: the kernel gave up on calls the pager then carried out (a store it kept,
    a fetch it served), and must not be confused by them.  Processes that retry the
    failed accesses read back exactly what they wrote, and nothing is ever taken for a
    tampered page."""
    pager = attack_pager(Only(Slow(delay), pred=lambda n: n % every == 0,
                              labels=["store", "fetch"]))
    async with capkern.boot(pager=pager, ram_pages=4, evict_batch=1,
                            pager_deadline=DEADLINE) as kernel:
        pids = [kernel.spawn(_retrying, 10, seed) for seed in range(2)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert kernel.stats.pager_timeouts > 0
        assert kernel.stats.integrity_faults == 0
        await trio.sleep(2 * delay)
        assert _live(kernel) == 0
    assert all(s.ok for s in statuses), statuses
