"""Processes: spawn, exit status, crash isolation, kill, args through msgpack,
introspection, and clean shutdown of the whole tree."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process, programs


async def test_exit_codes_and_exit_call() -> None:
    async def returns(proc: Process, code: int) -> int:
        return code

    async def exits(proc: Process) -> None:
        proc.exit(3)

    async with capkern.boot(paging=False) as k:
        assert (await k.wait(k.spawn(returns, 0))).ok
        assert (await k.wait(k.spawn(returns, 7))).code == 7
        status = await k.wait(k.spawn(exits))
        assert (status.state, status.code) == ("exited", 3)


async def test_crash_is_a_failed_status_and_others_keep_running() -> None:
    async def crasher(proc: Process) -> None:
        await trio.sleep(0)
        raise ValueError("bug in a user program")

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        k.spawn(programs.echo_server, caps={"service": Grant(ep, "r")})
        status = await k.wait(k.spawn(crasher, name="crasher"))
        assert status.state == "failed" and "ValueError" in (status.error or "")
        assert k.stats.crashes == 1
        assert [e.domain for e in k.events.of_kind("crash")] == ["crasher"]
        client = k.spawn(programs.echo_client, 3, caps={"server": Grant(ep, "w")})
        assert (await k.wait(client)).ok


async def test_kill_and_unknown_pids() -> None:
    async with capkern.boot(paging=False) as k:
        pid = k.spawn(lambda proc: trio.sleep_forever(), name="sleeper")
        await trio.sleep(0)
        assert k.status(pid) is None
        k.kill(pid)
        status = await k.wait(pid)
        assert status.state == "killed" and k.stats.kills == 1
        k.kill(pid)  # killing a dead domain is harmless
        for bad in (999, 0):
            with pytest.raises(capkern.NoSuchProcess):
                k.kill(bad)
        assert k.reap(pid).state == "killed"
        with pytest.raises(capkern.NoSuchProcess):
            await k.wait(pid)


async def test_args_cross_as_fresh_copies() -> None:
    mine = [1, [2, 3]]

    async def mutate(proc: Process, arg: list[object]) -> int:
        arg.append("x")
        return 0

    async with capkern.boot(paging=False) as k:
        assert (await k.wait(k.spawn(mutate, mine))).ok
        assert mine == [1, [2, 3]]
        with pytest.raises(capkern.UnencodableBody):
            k.spawn(mutate, object())
        with pytest.raises(capkern.ConfigError):
            k.spawn("not a program")  # type: ignore[arg-type]


async def test_introspection_capabilities_domains_dump() -> None:
    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("svc")
        pid = k.spawn(lambda proc: trio.sleep_forever(), name="holder",
                      caps={"svc": Grant(ep, "wg", badge=5)})
        await trio.testing.wait_all_tasks_blocked()
        (info,) = k.capabilities(pid)
        assert (info.name, info.kind, info.rights, info.badge) == ("svc", "Endpoint", "-wg", 5)
        assert info.parent == (0, ep.slot)
        row = next(d for d in k.domains() if d.pid == pid)
        assert (row.name, row.state, row.caps) == ("holder", "running", 1)
        dump = json.loads(json.dumps(k.dump()))
        assert any(o["kind"] == "Endpoint" and o["name"] == "svc" for o in dump["objects"])
        k.kill(pid)
        await k.wait(pid)
        assert k.capabilities(pid) == []  # a dead domain holds nothing


async def test_leaving_boot_cancels_everything_cleanly() -> None:
    started = trio.Event()

    async def forever(proc: Process) -> None:
        started.set()
        await trio.sleep_forever()

    async with capkern.boot(ram_pages=4) as k:
        for _ in range(3):
            k.spawn(forever)
        k.spawn(programs.sequential, 20, 50, 1)
        await started.wait()
        await trio.sleep(0.01)
    # every domain's task ended with the block; nothing left behind
    assert all(d.state in ("killed", "exited") for d in k.domains())
    with pytest.raises(capkern.KernelShutdown):
        k.spawn(forever)


async def test_kernel_event_subscribers_see_events() -> None:
    seen: list[str] = []
    async with capkern.boot(paging=False) as k:
        k.events.subscribe(lambda e: seen.append(e.kind))
        await k.wait(k.spawn(lambda proc: trio.sleep(0)))
    assert "spawn" in seen and "exit" in seen
