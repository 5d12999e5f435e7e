"""Processes from spawn to reap: exit statuses and every odd way for a program to end,
crashes that stay inside their domain, kill, arguments copied through msgpack, bad
process-management requests as typed errors, the removal of a dead domain's
capabilities, and a clean shutdown of the whole tree with domains blocked everywhere."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process, programs

from .helpers import echo, forever, forever_recv

BAD_CAPS: dict[str, Any] = {
    "list": lambda ep: [ep],
    "int-cap": lambda ep: {"svc": 5},
    "int-name": lambda ep: {5: ep},
    "empty-name": lambda ep: {"": ep},
    "bad-rights": lambda ep: {"svc": Grant(ep, "xyz")},
    "rights-range": lambda ep: {"svc": Grant(ep, 99)},  # type: ignore[arg-type]
    "rights-none": lambda ep: {"svc": Grant(ep, None)},  # type: ignore[arg-type]
    "grant-of-int": lambda ep: {"svc": Grant(7)},  # type: ignore[arg-type]
}


async def test_sys_exit_is_an_exit_status_not_a_kernel_crash(bare_kernel: capkern.Kernel) -> None:
    async def exit_code(proc: Process) -> None:
        sys.exit(4)

    async def exit_plain(proc: Process) -> None:
        await trio.sleep(0)
        sys.exit()

    async def exit_message(proc: Process) -> None:
        sys.exit("fatal: no config")

    k = bare_kernel
    ep = k.new_endpoint("echo")
    k.spawn(programs.echo_server, caps={"service": Grant(ep, "r")})
    assert (await k.wait(k.spawn(exit_code))).code == 4
    assert (await k.wait(k.spawn(exit_plain))).ok
    status = await k.wait(k.spawn(exit_message))
    assert (status.state, status.code) == ("exited", 1)
    assert status.error == "fatal: no config"
    # the rest of the system ran on
    client = k.spawn(programs.echo_client, 2, caps={"server": Grant(ep, "w")})
    assert (await k.wait(client)).ok


class Weird(BaseException):
    pass


@pytest.mark.parametrize("exc", [Weird("odd"), GeneratorExit()],
                         ids=["BaseException-subclass", "GeneratorExit"])
async def test_base_exceptions_fail_only_their_domain(
        exc: BaseException, bare_kernel: capkern.Kernel) -> None:
    async def raiser(proc: Process) -> None:
        await trio.sleep(0)
        raise exc

    k = bare_kernel
    bystander = k.spawn(forever, name="bystander")
    status = await k.wait(k.spawn(raiser, name="raiser"))
    assert status.state == "failed"
    assert type(exc).__name__ in (status.error or "")
    assert k.status(bystander) is None  # still running
    assert k.stats.crashes == 1
    assert [e.domain for e in k.events.of_kind("crash")] == ["raiser"]
    assert (await k.wait(k.spawn(lambda proc: trio.sleep(0)))).ok


@pytest.mark.parametrize("nested", [False, True], ids=["direct", "from-a-child-task"])
async def test_keyboard_interrupt_in_a_domain_ends_the_run(nested: bool) -> None:
    """Trio delivers Ctrl-C to whichever task runs; a domain must not swallow it."""
    async def interrupted(proc: Process) -> None:
        await trio.sleep(0)
        if nested:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_raise_keyboard_interrupt)
                await trio.sleep_forever()
        raise KeyboardInterrupt

    with pytest.raises(BaseException) as info:  # which one: checked below
        async with capkern.boot(paging=False) as k:
            k.spawn(forever, name="bystander")
            k.spawn(interrupted)
            await trio.sleep_forever()  # ended by the interrupt tearing the kernel down
    got = info.value
    if nested:  # it comes through the program's own nursery, as Trio groups it
        assert isinstance(got, BaseExceptionGroup)
        assert got.subgroup(KeyboardInterrupt) is not None
        others = got.subgroup(lambda e: not isinstance(e, KeyboardInterrupt | BaseExceptionGroup))
        assert others is None
    else:
        assert type(got) is KeyboardInterrupt


async def _raise_keyboard_interrupt() -> None:
    await trio.sleep(0)
    raise KeyboardInterrupt


async def test_exit_from_a_task_of_the_programs_own_nursery(bare_kernel: capkern.Kernel) -> None:
    async def exits_in_child(proc: Process) -> None:
        async def child() -> None:
            await trio.sleep(0)
            proc.exit(6)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            nursery.start_soon(trio.sleep_forever)

    async def sys_exit_in_child(proc: Process) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sys.exit, 9)

    async def exit_and_crash(proc: Process) -> None:
        async def crash() -> None:
            raise ValueError("child bug")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash)
            proc.exit(3)

    k = bare_kernel
    status = await k.wait(k.spawn(exits_in_child))
    assert (status.state, status.code) == ("exited", 6)
    assert (await k.wait(k.spawn(sys_exit_in_child))).code == 9
    status = await k.wait(k.spawn(exit_and_crash))
    assert status.state == "failed" and "child bug" in (status.error or "")


async def test_kill_of_a_program_with_its_own_nursery_is_killed(
        bare_kernel: capkern.Kernel) -> None:
    async def busy(proc: Process) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)

    k = bare_kernel
    pid = k.spawn(busy)
    await trio.testing.wait_all_tasks_blocked()
    k.kill(pid)
    status = await k.wait(pid)
    assert status.state == "killed" and k.stats.crashes == 0


async def test_weird_exit_codes(bare_kernel: capkern.Kernel) -> None:
    class Code(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    async def returns(proc: Process, what: str) -> Any:
        return {"sub": Code(5), "huge": 1 << 80}[what]

    async def exits_huge(proc: Process) -> None:
        proc.exit(1 << 70)

    async def exits_str(proc: Process) -> int:
        try:
            proc.exit("3")  # type: ignore[arg-type]
        except capkern.ConfigError:
            return 11
        return 0

    k = bare_kernel
    sub = await k.wait(k.spawn(returns, "sub"))
    assert type(sub.code) is int and sub.code == 5 and not sub.ok
    for status in (await k.wait(k.spawn(returns, "huge")),
                   await k.wait(k.spawn(exits_huge))):
        assert (status.state, status.code) == ("exited", 1)
        assert "out of range" in (status.error or "")
    assert (await k.wait(k.spawn(exits_str))).code == 11
    json.dumps(k.dump())


@pytest.mark.parametrize("pid", [[1], {"pid": 1}, True, 1.0, "1", None, -1, 0])
async def test_bad_pids_are_no_such_process(pid: Any, bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    assert k.spawn(forever) == 1
    for call in (k.kill, k.status, k.reap, k.capabilities):
        if pid == 0 and call == k.capabilities:
            continue  # pid 0 is the root's CSpace there
        with pytest.raises(capkern.NoSuchProcess):
            call(pid)
    with pytest.raises(capkern.NoSuchProcess):
        await k.wait(pid)
    assert k.status(1) is None  # nothing happened to pid 1


@pytest.mark.parametrize("which", list(BAD_CAPS))
async def test_bad_caps_mapping_is_a_config_error(which: str, bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    ep = k.new_endpoint("e")
    with pytest.raises(capkern.ConfigError):
        k.spawn(forever, caps=BAD_CAPS[which](ep))
    assert k.domains() == [] and k.stats.spawns == 0
    assert await k.revoke(ep) == 0


async def test_a_refused_spawn_leaves_no_capability_behind() -> None:
    async with capkern.boot(paging=False, cspace_size=3) as k:
        a, b = k.new_endpoint("a"), k.new_endpoint("b")
        with pytest.raises(capkern.BadgeError):
            k.spawn(forever, caps={"a": Grant(a), "b": Grant(b, badge=-3)})
        with pytest.raises(capkern.CSpaceFull):
            k.spawn(forever, caps={"a": a, "b": b, "c": Grant(a, "r")})
        two = k.spawn(forever, caps={"a": a, "b": Grant(b, "r")})  # exactly fits
        assert len(k.capabilities(two)) == 2 and two == 1  # refused spawns took no pid
        k.kill(two)
        await k.wait(two)
        k.delete(b)
        with pytest.raises(capkern.EmptySlot):
            k.spawn(forever, caps={"a": a, "b": b})
        # no half-built domain holds a child of the root's capability
        assert await k.revoke(a) == 0
        assert [d.pid for d in k.domains()] == [two] and k.stats.spawns == 1
        assert all(d["caps"] == [] for d in k.dump()["domains"] if d["pid"] != 0)


async def test_root_api_bad_arguments_are_typed(bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    ep = k.new_endpoint("e")
    for rights in ("rwx", None, 99, 1.5):
        with pytest.raises(capkern.ConfigError):
            k.mint(ep, rights)  # type: ignore[arg-type]
    for not_a_cap in (ep.slot, "e", None):
        with pytest.raises(capkern.ConfigError):
            await k.revoke(not_a_cap)  # type: ignore[arg-type]
        with pytest.raises(capkern.ConfigError):
            k.delete(not_a_cap)  # type: ignore[arg-type]
    with pytest.raises(capkern.ConfigError):
        k.new_endpoint(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(capkern.ConfigError):
        k.new_notification(42)  # type: ignore[arg-type]
    with pytest.raises(capkern.ConfigError):
        k.new_endpoint("x", contract=object())  # type: ignore[arg-type]
    json.dumps(k.dump())


async def test_concurrent_waiters_and_wait_after_reap(bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    go = trio.Event()

    async def prog(proc: Process) -> int:
        await go.wait()
        return 2

    pid = k.spawn(prog)
    got: list[capkern.ExitStatus] = []

    async def waiter() -> None:
        got.append(await k.wait(pid))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(capkern.ProcessError):
            k.reap(pid)  # still running
        go.set()
    assert len(got) == 3 and all(s == got[0] and s.code == 2 for s in got)
    assert k.reap(pid) == got[0]
    for call in (k.reap, k.status, k.kill):
        with pytest.raises(capkern.NoSuchProcess):
            call(pid)


async def test_an_ended_domains_handle_is_dead() -> None:
    leaked: list[Process] = []

    async def prog(proc: Process) -> int:
        proc.new_endpoint("ep")
        leaked.append(proc)
        return 0

    async with capkern.boot(ram_pages=8) as k:
        pid = k.spawn(prog)
        await k.wait(pid)
        (proc,) = leaked
        for syscall in (lambda: proc.new_endpoint("x"), lambda: proc.new_notification("n"),
                        lambda: proc.mmap(4096), lambda: proc.munmap(0, 4096)):
            with pytest.raises(capkern.ProcessError):
                syscall()
        with pytest.raises(capkern.ProcessError):
            await proc.read(0, 1)
        with pytest.raises(capkern.ProcessError):
            await proc.write(0, b"x")
        with pytest.raises(capkern.EmptySlot):
            await proc.recv("ep")
        with pytest.raises(capkern.ReplyError):
            proc.reply("ok")
        assert proc.caps() == [] and k.capabilities(pid) == []
        (row,) = [d for d in k.dump()["domains"] if d["pid"] == pid]
        assert row["caps"] == []


async def test_counters_add_up_over_every_way_to_end(bare_kernel: capkern.Kernel) -> None:
    async def crash(proc: Process) -> None:
        raise RuntimeError("crash")

    async def sys_exit(proc: Process) -> None:
        sys.exit(2)

    k = bare_kernel
    statuses = [await k.wait(k.spawn(p)) for p in (crash, sys_exit)]
    victim = k.spawn(forever)
    await trio.testing.wait_all_tasks_blocked()
    k.kill(victim)
    k.kill(victim)  # a second kill of the same domain is not counted again
    statuses.append(await k.wait(victim))
    assert [s.state for s in statuses] == ["failed", "exited", "killed"]
    assert (k.stats.spawns, k.stats.exits, k.stats.crashes, k.stats.kills) == (3, 2, 1, 1)


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks: list[trio.lowlevel.Task] = []
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    while stack:
        task = stack.pop()
        tasks.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return tasks


async def test_shutdown_with_domains_blocked_everywhere(autojump_clock: trio.abc.Clock) -> None:
    before = len(_all_tasks())

    async def saves_caller(proc: Process) -> None:
        await proc.recv("service")
        proc.save_caller("c")
        await trio.sleep_forever()

    async def caller(proc: Process) -> None:
        await proc.call("server", "x")

    async def sender(proc: Process) -> None:
        await proc.send("server", "x")

    async def waiter(proc: Process) -> None:
        await proc.wait("bell")

    async def toucher(proc: Process) -> None:
        addr = proc.mmap(4096 * 8)
        for i in range(8):  # more pages than RAM: some are sealed and swapped out
            await proc.write(addr + i * 4096, b"x")
        await proc.wait("bell")

    async with capkern.boot(ram_pages=4) as k:
        busy = k.new_endpoint("busy")
        lonely = k.new_endpoint("lonely")
        bell = k.new_notification("bell")
        pids = [
            k.spawn(saves_caller, caps={"service": Grant(busy, "r")}),
            k.spawn(caller, caps={"server": Grant(busy, "w")}),
            k.spawn(caller, caps={"server": Grant(busy, "w")}),  # queued behind
            k.spawn(forever_recv, caps={"service": Grant(lonely, "r")}),
            k.spawn(sender, caps={"server": Grant(k.new_endpoint("nobody"), "w")}),
            k.spawn(waiter, caps={"bell": Grant(bell, "r")}),
            k.spawn(toucher, caps={"bell": Grant(bell, "r")}),
        ]
        await trio.sleep(1)
        assert all(k.status(p) is None for p in pids)
    assert len(_all_tasks()) == before  # no task outlived the boot block
    assert {k.status(p).state for p in pids} == {"killed"}  # type: ignore[union-attr]
    assert all(k.status(p).error == "kernel shutdown" for p in pids)  # type: ignore[union-attr]
    assert all(d.state in ("killed", "exited") for d in k.domains())
    with pytest.raises(capkern.KernelShutdown):
        k.spawn(forever)


async def test_a_program_that_swallows_its_kill_is_still_killed() -> None:
    async def stubborn(proc: Process) -> int:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            return 0
        return 1

    async with capkern.boot(paging=False) as k:
        pid = k.spawn(stubborn)
        at_shutdown = k.spawn(stubborn)
        await trio.testing.wait_all_tasks_blocked()
        k.kill(pid)
        assert (await k.wait(pid)).state == "killed"
    status = k.status(at_shutdown)
    assert status is not None
    assert (status.state, status.error) == ("killed", "kernel shutdown")


async def test_spawn_returns_pids_and_wait_returns_exit_status(bare_kernel: capkern.Kernel) -> None:
    async def returns(proc: Process, code: int) -> int:
        await trio.sleep(0)
        return code

    async def returns_none(proc: Process) -> None:
        return None

    async def returns_junk(proc: Process) -> Any:
        return "not an int"

    k = bare_kernel
    pids = [k.spawn(returns, c, name=f"r{c}") for c in (0, 1, 42)]
    assert all(isinstance(p, int) and p > 0 for p in pids)
    assert len(set(pids)) == 3
    for pid, code in zip(pids, (0, 1, 42), strict=True):
        status = await k.wait(pid)
        assert isinstance(status, capkern.ExitStatus)
        assert (status.pid, status.name, status.state, status.code) == (
            pid, f"r{code}", "exited", code
        )
        assert status.ok is (code == 0)
        assert await k.wait(pid) == status  # waiting again is fine
        assert k.status(pid) == status
    for prog in (returns_none, returns_junk):
        status = await k.wait(k.spawn(prog))
        assert (status.state, status.code) == ("exited", 0)
        assert status.name == prog.__name__
    assert k.stats.spawns == 5 and k.stats.exits == 5


async def test_proc_exit_sets_the_code() -> None:
    after: list[str] = []

    async def quitter(proc: Process) -> int:
        await trio.sleep(0)
        proc.exit(3)
        after.append("unreachable")
        return 0

    async def nested_quitter(proc: Process) -> None:
        def deep() -> None:
            proc.exit(7)

        try:
            deep()
        except Exception:  # ProcessExit is not an Exception: a catch-all cannot eat it
            after.append("swallowed")

    async with capkern.boot(paging=False) as k:
        status = await k.wait(k.spawn(quitter))
        assert (status.state, status.code, status.ok) == ("exited", 3, False)
        status = await k.wait(k.spawn(nested_quitter))
        assert (status.state, status.code) == ("exited", 7)
        assert k.stats.crashes == 0
    assert after == []


async def test_crash_is_contained_and_recorded(bare_kernel: capkern.Kernel) -> None:
    async def crasher(proc: Process) -> None:
        await trio.sleep(0)
        raise ValueError("program bug 123")

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(programs.echo_server, name="echo", caps={"service": Grant(ep, "r")})
    before = k.stats.crashes
    assert before == 0
    pid = k.spawn(crasher, name="crasher")
    status = await k.wait(pid)
    assert status.state == "failed" and status.code is None and not status.ok
    assert "ValueError" in (status.error or "") and "program bug 123" in (status.error or "")
    assert k.stats.crashes == before + 1
    crashes = k.events.of_kind("crash")
    assert [(e.pid, e.domain) for e in crashes] == [(pid, "crasher")]
    assert "program bug 123" in crashes[0].detail
    # every other domain keeps running; the echo server still answers
    assert k.status(srv) is None
    client = k.spawn(programs.echo_client, 3, caps={"server": Grant(ep, "w")})
    assert (await k.wait(client)).ok  # three right echoes
    states = {d.pid: d.state for d in k.domains()}
    assert states[pid] == "failed" and states[srv] == "running"


async def test_crash_while_others_talk_concurrently() -> None:
    results: list[int] = []

    async def client(proc: Process, n: int) -> None:
        for i in range(20):
            results.append((await proc.call("s", "x", i)).body["body"])
            await trio.sleep(0)

    async def crasher(proc: Process) -> None:
        for _ in range(5):
            await trio.sleep(0)
        raise RuntimeError("mid-flight")

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        k.spawn(echo, caps={"service": Grant(ep, "r")})
        clients = [k.spawn(client, n, caps={"s": Grant(ep, "w")}) for n in range(3)]
        bad = k.spawn(crasher)
        assert (await k.wait(bad)).state == "failed"
        for pid in clients:
            assert (await k.wait(pid)).ok
    assert sorted(results) == sorted(list(range(20)) * 3)


async def test_kill_and_unknown_pids(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    ran: list[int] = []

    async def prog(proc: Process) -> int:
        ran.append(proc.pid)
        return 7

    k = bare_kernel
    early = k.spawn(prog, name="early")
    k.kill(early)  # before it ever ran: it never runs
    status = await k.wait(early)
    assert status.state == "killed" and status.code is None
    assert ran == []
    pid = k.spawn(forever, name="victim")
    await trio.sleep(1)
    assert k.status(pid) is None
    k.kill(pid)
    status = await k.wait(pid)
    assert (status.pid, status.state) == (pid, "killed")
    assert k.stats.kills == 2
    assert [e.pid for e in k.events.of_kind("kill")] == [early, pid]
    k.kill(pid)  # killing a dead domain is harmless
    assert k.stats.kills == 2
    for bogus in (9999, -1, 0):
        with pytest.raises(capkern.NoSuchProcess):
            k.kill(bogus)
        with pytest.raises(capkern.NoSuchProcess):
            await k.wait(bogus)
    with pytest.raises(capkern.ProcessError):
        k.kill(12345)
    # reaping forgets the domain
    assert k.reap(pid) == status
    with pytest.raises(capkern.NoSuchProcess):
        k.kill(pid)
    with pytest.raises(capkern.NoSuchProcess):
        await k.wait(pid)
    with pytest.raises(capkern.NoSuchProcess):
        k.reap(k.spawn(forever))  # still running


async def test_kill_interrupts_a_blocked_call_and_the_server_goes_on() -> None:
    answered: list[bool] = []
    victim_dead = trio.Event()

    async def slow_server(proc: Process) -> None:
        await proc.recv("service")
        await victim_dead.wait()
        answered.append(proc.reply("ok", "late"))
        msg = await proc.recv("service")
        answered.append(proc.reply("ok", msg.body))

    async def caller(proc: Process) -> None:
        await proc.call("s", "x")

    async def client(proc: Process) -> int:
        return 0 if (await proc.call("s", "y", 5)).body == 5 else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(slow_server, caps={"service": Grant(ep, "r")})
        victim = k.spawn(caller, caps={"s": Grant(ep, "w")})
        await trio.testing.wait_all_tasks_blocked()
        k.kill(victim)
        assert (await k.wait(victim)).state == "killed"
        victim_dead.set()
        assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
        assert (await k.wait(srv)).ok
    assert answered == [False, True]


async def test_args_are_copied_through_msgpack() -> None:
    seen: dict[str, Any] = {}
    mine = [1, 2, {"k": [3]}]

    async def mutator(proc: Process, items: list[Any], pair: Any, blob: bytes) -> None:
        seen["same_object"] = items is mine
        items.append("added")
        items[2]["k"].append(4)
        seen["items"] = items
        seen["pair"] = pair
        seen["blob"] = blob

    async with capkern.boot(paging=False) as k:
        assert (await k.wait(k.spawn(mutator, mine, (5, 6), b"\x00\x01"))).ok
    assert seen["same_object"] is False
    assert mine == [1, 2, {"k": [3]}]  # the caller's list is untouched
    assert seen["items"] == [1, 2, {"k": [3, 4]}, "added"]
    assert seen["pair"] == [5, 6]  # tuples cross as lists
    assert seen["blob"] == b"\x00\x01"


@pytest.mark.parametrize(
    "bad", [object(), {1, 2}, [lambda: 0], {"k": trio.Event()}, 1 << 80],
    ids=["object", "set", "function", "trio-event", "int-over-64-bits"],
)
async def test_non_serialisable_arg_is_refused_at_spawn(
        bad: Any, bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    spawns = k.stats.spawns
    with pytest.raises(capkern.CapkernError) as info:
        k.spawn(forever, bad)
    assert isinstance(info.value, capkern.UnencodableBody)
    assert k.stats.spawns == spawns and k.domains() == []


async def test_spawn_rejects_bad_program_name_kind_and_grants(
        bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    with pytest.raises(capkern.ConfigError):
        k.spawn("not a program")  # type: ignore[arg-type]
    with pytest.raises(capkern.ConfigError):
        k.spawn(forever, name=b"x")  # type: ignore[arg-type]
    for kind in ("kernel", "root", ""):
        with pytest.raises(capkern.ConfigError):
            k.spawn(forever, kind=kind)
    assert k.domains() == []
    ep = k.new_endpoint()
    with pytest.raises(capkern.CapabilityError):
        k.spawn(forever, caps={"x": capkern.RootCap(999, "forged")})
    with pytest.raises(capkern.BadgeError):
        k.spawn(forever, caps={"x": Grant(k.mint(ep, "w", badge=1), "w", badge=2)})
    assert k.domains() == []


async def test_leaving_boot_cancels_running_domains_cleanly() -> None:
    finalised: list[str] = []

    async def stubborn(proc: Process) -> None:
        try:
            await trio.sleep_forever()
        finally:
            finalised.append(proc.name)

    async def caller(proc: Process) -> None:
        try:
            await proc.call("s", "x")
        finally:
            finalised.append(proc.name)

    async def holder(proc: Process) -> None:
        try:
            await proc.recv("service")
            proc.save_caller("held")
            await trio.sleep_forever()
        finally:
            finalised.append(proc.name)

    with trio.fail_after(5):
        async with capkern.boot(ram_pages=4) as k:
            ep = k.new_endpoint()
            pids = [
                k.spawn(stubborn, name="stubborn"),
                k.spawn(holder, name="holder", caps={"service": Grant(ep, "r")}),
                k.spawn(caller, name="caller", caps={"s": Grant(ep, "w")}),
                k.spawn(forever, name="plain"),
            ]
            await trio.testing.wait_all_tasks_blocked()
            # and one in the middle of paging: 20 pages through 4 frames, 50 rounds
            pids.append(k.spawn(programs.sequential, 20, 50, 1, name="pager-user"))
            while k.stats.evictions == 0:  # until it pages through the sealer and pager
                await trio.sleep(0)
            assert k.status(pids[-1]) is None  # still running when the block is left
    # the block exited with no exception; every domain ended and was torn down
    assert sorted(finalised) == ["caller", "holder", "stubborn"]
    assert all(d.state in ("killed", "exited") for d in k.domains())  # system servers too
    for pid in pids:
        status = k.status(pid)
        assert status is not None and status.state == "killed"
        assert k.capabilities(pid) == []
    assert k.stats.crashes == 0
    with pytest.raises(capkern.KernelShutdown):
        k.spawn(forever)


async def test_dead_domain_capabilities_are_removed(bare_kernel: capkern.Kernel) -> None:
    async def short(proc: Process) -> int:
        proc.copy("e", "w", name="copy")
        proc.mint("n", "w", 9, name="minted")
        proc.new_endpoint("own")
        assert len(proc.caps()) == 5
        return 0

    k = bare_kernel
    ep = k.new_endpoint()
    n = k.new_notification()
    pids = []
    for how in ("exit", "crash", "kill"):
        async def prog(proc: Process, how: str = how) -> int:
            await short(proc)
            if how == "crash":
                raise RuntimeError("die")
            if how == "kill":
                await trio.sleep_forever()
            return 0

        pid = k.spawn(prog, caps={"e": ep, "n": n})
        await trio.testing.wait_all_tasks_blocked()
        if how == "kill":
            k.kill(pid)
        status = await k.wait(pid)
        expected = {"exit": "exited", "crash": "failed", "kill": "killed"}[how]
        assert status.state == expected, status
        if how == "crash":
            assert "die" in (status.error or "")  # not an assertion in ``short``
        pids.append(pid)
        assert k.capabilities(pid) == []
        assert next(d for d in k.domains() if d.pid == pid).caps == 0
    # nothing derived from the root's capabilities survives in dead domains
    dump = k.dump()
    for d in dump["domains"]:
        if d["pid"] in pids:
            assert d["caps"] == []
    children = [c for d in dump["domains"] if d["pid"] != 0 for c in d["caps"]]
    assert children == []
    # and revoking at the root finds nothing left to remove
    assert await k.revoke(ep) == 0 and await k.revoke(n) == 0


async def test_dead_client_frees_nothing_it_does_not_own(bare_kernel: capkern.Kernel) -> None:
    """A domain's end removes only its own capabilities, not the server's or root's."""

    async def client(proc: Process) -> int:
        return 0 if (await proc.call("s", "x", 1)).body["body"] == 1 else 1

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(echo, caps={"service": Grant(ep, "r")})
    before = k.capabilities(srv)
    root_before = k.capabilities(0)
    assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
    assert k.capabilities(srv) == before
    assert k.capabilities(0) == root_before
    assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
