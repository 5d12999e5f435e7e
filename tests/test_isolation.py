"""``boot(isolation="process")``: untrusted servers in child OS processes, supervised.

The kit's attackers hold the same properties in both modes; a killed pager or block
device is noticed at once, restarted (the OS pid changes), and only the owners of
pages that died with it get ``PageLost`` while every other process finishes.  Real
child processes run on the real clock: every wait here is bounded by ``fail_after``.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

import pytest
import trio

import capkern
from capkern import programs
from capkern._pagefmt import PAGE_SIZE
from capkern.errors import ConfigError, PageLost
from capkern.isolation import IsolationOptions, RestartPolicy
from capkern.testing import (
    BitFlip,
    Crash,
    Drop,
    Evidence,
    Flood,
    ForgeCaps,
    Garbage,
    Replay,
    ReuseReply,
    WrongLabel,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    disk_attacker,
    expected_pages,
    is_typed_fault,
    run_workload,
)
from capkern.testing.escape import escape_pager

PAGES, ROUNDS, RAM = 12, 2, 5


def _domain(kernel: capkern.Kernel, name: str) -> capkern.DomainInfo:
    return next(d for d in kernel.domains() if d.name == name)


@pytest.mark.parametrize("tamper", [BitFlip("tag", seed=1), Replay(), Drop(), Garbage(),
                                    WrongLabel(), ForgeCaps(), Flood(20), ReuseReply(),
                                    Crash()],
                         ids=lambda t: t.name)
async def test_kit_attackers_hold_every_property_in_both_modes(tamper: Any,
                                                               isolation: str) -> None:
    evidence = Evidence()
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=RAM, isolation=isolation, pager_deadline=1.0,
                                pager=attack_pager(tamper, evidence=evidence)) as kernel:
            statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                          seeds=range(2))
            pager = _domain(kernel, "pager")
    assert_no_wrong_reads(statuses)
    assert all(s.ok or is_typed_fault(s) for s in statuses), statuses
    assert_no_plaintext(evidence, [p for s in range(2) for p in expected_pages(s, PAGES, ROUNDS)])
    assert evidence.breaches == []
    assert pager.isolation == isolation
    if not isinstance(tamper, Crash):
        assert evidence.tried[tamper.name] >= 1 or sum(evidence.refused.values()) >= 1


@pytest.mark.parametrize("name", ["DiskBitFlip", "DiskReplay"])
async def test_malicious_disks_by_name_in_both_modes(name: str, isolation: str) -> None:
    evidence = Evidence()
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=RAM, isolation=isolation, pager_deadline=1.0,
                                blockdev_server=disk_attacker(name, evidence)) as kernel:
            statuses = await run_workload(kernel, programs.sequential, PAGES, 3,
                                          seeds=range(2))
    assert_no_wrong_reads(statuses)
    assert all(s.ok or is_typed_fault(s) for s in statuses)
    assert any(not s.ok for s in statuses) and kernel.stats.integrity_faults > 0
    assert_no_plaintext(evidence, [p for s in range(2) for p in expected_pages(s, PAGES, 3)])


async def owner(proc: capkern.Process, pages: int) -> int:
    """Write pages (more than RAM), wait for the gate, read them back: 7 if lost."""
    base = proc.mmap(pages * PAGE_SIZE)
    for i in range(pages):
        await proc.write(base + i * PAGE_SIZE, b"page %d" % i)
    await proc.wait("gate")
    try:
        for i in range(pages):
            if await proc.read(base + i * PAGE_SIZE, 6 + len(str(i))) != b"page %d" % i:
                return 99
    except PageLost:
        return 7
    return 0


async def ipc_bystander(proc: capkern.Process, calls: int) -> int:
    """Needs no pager: calls an echo server across the pager's death (no paged memory;
    a process whose pages were evicted is an owner, not a bystander)."""
    for i in range(calls):
        if (await proc.call("server", "echo", i)).body["echo"] != i:
            return 1
        await trio.sleep(0.001)
    return 0


async def _open_gate(kernel: capkern.Kernel, gate: capkern.RootCap) -> None:
    pid = kernel.spawn(_signal, caps={"gate": gate}, name="opener")
    await kernel.wait(pid)


async def _signal(proc: capkern.Process) -> None:
    proc.signal("gate")


async def _restarted(kernel: capkern.Kernel, name: str, old: int | None) -> capkern.DomainInfo:
    while True:
        info = _domain(kernel, name)
        if info.os_pid != old and info.state == "running":
            return info
        await trio.sleep(0.01)


@pytest.mark.parametrize("victim", ["pager", "blockdev"])
async def test_killed_server_process_is_restarted_and_only_owners_lose_pages(
        victim: str) -> None:
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process") as kernel:
            gate = kernel.new_notification("gate")
            own = kernel.spawn(owner, 10, caps={"gate": gate})
            while kernel.stats.evictions < 6:
                await trio.sleep(0.01)
            ep = kernel.new_endpoint("echo")
            kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
            by = kernel.spawn(ipc_bystander, 100, caps={"server": capkern.Grant(ep, "w", 1)})
            old = _domain(kernel, victim).os_pid
            assert old is not None and old != os.getpid()
            os.kill(old, signal.SIGKILL)
            new = await _restarted(kernel, victim, old)
            await _open_gate(kernel, gate)
            own_status = await kernel.wait(own)
            later = await kernel.wait(kernel.spawn(programs.sequential, 10, 2))
            by_status = await kernel.wait(by)
            events = kernel.events.of_kind("restart")
    assert own_status.code == 7  # PageLost, for the owner of the lost pages only
    assert by_status.ok and later.ok
    assert new.restarts == 1 and new.os_pid != old
    assert kernel.stats.pages_lost > 0 and kernel.stats.page_lost_faults >= 1
    assert events and events[0].domain == victim


async def test_restart_limit_ends_the_server_and_faults_stay_typed() -> None:
    options = IsolationOptions(restart=RestartPolicy(max_restarts=1, backoff=0.01))
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", pager_deadline=1.0,
                                isolation_options=options,
                                pager=escape_pager("exit", 9)) as kernel:
            statuses = [await kernel.wait(kernel.spawn(programs.sequential, 10, 2))
                        for _ in range(3)]
            pager = _domain(kernel, "pager")
    assert all(is_typed_fault(s) for s in statuses), statuses
    assert pager.state == "failed" and pager.restarts == 1
    assert pager.exit is not None and "ServerCrashed" in (pager.exit.error or "")


async def test_domains_show_isolation_os_pid_and_restarts(isolation: str) -> None:
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation=isolation) as kernel:
            await kernel.wait(kernel.spawn(programs.sequential, 6, 1))
            rows = {d.name: d for d in kernel.domains()}
    assert rows["crypt"].isolation == "task" and rows["crypt"].os_pid == os.getpid()
    assert rows["sequential"].isolation == "task"
    for name in ("pager", "blockdev"):
        assert rows[name].isolation == isolation and rows[name].restarts == 0
        if isolation == "process":
            assert rows[name].os_pid not in (None, os.getpid())
        else:
            assert rows[name].os_pid == os.getpid()


async def test_kernel_process_is_not_dumpable_and_limits_reach_the_child() -> None:
    options = IsolationOptions(rlimits={"nofile": 64, "cpu": 600})
    with trio.fail_after(60):
        async with capkern.boot(ram_pages=4, isolation="process", isolation_options=options,
                                pager=escape_pager("limits")) as kernel:
            assert kernel.vm is not None
            report = (await kernel.vm.server_stats())["pager"]["escape"]
    libc = ctypes.CDLL(None)
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE
    assert report["rlimits"]["nofile"] == 64 and report["rlimits"]["cpu"] == 600


# -- what can be named for a child ---------------------------------------------------------


def _closure_pager() -> Any:
    async def inner(proc: capkern.Process, policy: str = "clock") -> None:
        await proc.recv("service")

    return inner


@pytest.mark.parametrize("pager, why", [
    (_closure_pager(), "closure"),
    (lambda proc, policy="clock": None, "lambda"),
    (attack_pager(BitFlip("tag")).__call__, "not a named"),
], ids=["closure", "lambda", "bound-closure"])
async def test_unnamed_programs_are_a_config_error(pager: Any, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        async with capkern.boot(ram_pages=4, isolation="process", pager=pager):
            pass


async def test_a_tamper_made_with_a_function_is_a_config_error() -> None:
    from capkern.testing import Only

    pager = attack_pager(Only(BitFlip("tag"), pred=lambda n: n % 2 == 0))
    with pytest.raises(ConfigError, match="cannot be rebuilt"):
        async with capkern.boot(ram_pages=4, isolation="process", pager=pager):
            pass


async def test_bad_isolation_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="isolation"):
        async with capkern.boot(isolation="vm"):
            pass
    with pytest.raises(ConfigError, match="rlimits"):
        async with capkern.boot(isolation="process",
                                isolation_options=IsolationOptions(rlimits={"stack": 1})):
            pass
    with pytest.raises(ConfigError, match="IsolationOptions"):
        async with capkern.boot(isolation="process", isolation_options={"rlimits": {}}):
            pass
