"""Review of the kernel core (kernel.py, proc.py, domain.py, trace.py): bad input from the
booting code and from malicious domains, odd ways for a program to end, introspection
that must stay machine-readable, and shutdown with domains blocked everywhere."""

from __future__ import annotations

import io
import json
import math
import sys
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process, programs
from capkern.contract import Contract, Int, Op, Struct
from capkern.trace import Event

ADD = Contract(
    "adder",
    {"add": Op(Struct({"a": Int(), "b": Int()}), Struct({"sum": Int()}), frozenset())},
)


async def forever(proc: Process) -> None:
    await trio.sleep_forever()


async def echo_once_then_sleep(proc: Process) -> None:
    msg = await proc.recv("service")
    proc.reply("ok", msg.body)
    await trio.sleep_forever()


# -- how a program ends: nothing a program raises takes the kernel down --------------------


async def test_sys_exit_is_an_exit_status_not_a_kernel_crash() -> None:
    async def exit_code(proc: Process) -> None:
        sys.exit(4)

    async def exit_plain(proc: Process) -> None:
        await trio.sleep(0)
        sys.exit()

    async def exit_message(proc: Process) -> None:
        sys.exit("fatal: no config")

    async with capkern.boot(paging=False) as k:
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
async def test_base_exceptions_fail_only_their_domain(exc: BaseException) -> None:
    async def raiser(proc: Process) -> None:
        await trio.sleep(0)
        raise exc

    async with capkern.boot(paging=False) as k:
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


async def test_exit_from_a_task_of_the_programs_own_nursery() -> None:
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

    async with capkern.boot(paging=False) as k:
        status = await k.wait(k.spawn(exits_in_child))
        assert (status.state, status.code) == ("exited", 6)
        assert (await k.wait(k.spawn(sys_exit_in_child))).code == 9
        status = await k.wait(k.spawn(exit_and_crash))
        assert status.state == "failed" and "child bug" in (status.error or "")


async def test_kill_of_a_program_with_its_own_nursery_is_killed() -> None:
    async def busy(proc: Process) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)

    async with capkern.boot(paging=False) as k:
        pid = k.spawn(busy)
        await trio.testing.wait_all_tasks_blocked()
        k.kill(pid)
        status = await k.wait(pid)
        assert status.state == "killed" and k.stats.crashes == 0


async def test_killed_before_it_ran_never_runs() -> None:
    ran: list[int] = []

    async def prog(proc: Process) -> int:
        ran.append(proc.pid)
        return 7

    async with capkern.boot(paging=False) as k:
        pid = k.spawn(prog)
        k.kill(pid)
        status = await k.wait(pid)
        assert status.state == "killed" and status.code is None
        assert ran == []


async def test_weird_exit_codes() -> None:
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

    async with capkern.boot(paging=False) as k:
        sub = await k.wait(k.spawn(returns, "sub"))
        assert type(sub.code) is int and sub.code == 5 and not sub.ok
        for status in (await k.wait(k.spawn(returns, "huge")),
                       await k.wait(k.spawn(exits_huge))):
            assert (status.state, status.code) == ("exited", 1)
            assert "out of range" in (status.error or "")
        assert (await k.wait(k.spawn(exits_str))).code == 11
        json.dumps(k.dump())


# -- the boot block ---------------------------------------------------------------------------


async def test_an_error_in_the_boot_block_comes_out_as_itself() -> None:
    with pytest.raises(capkern.NoSuchProcess):
        async with capkern.boot(paging=False) as k:
            k.kill(12345)

    class Mine(Exception):
        pass

    cause = KeyError("why")
    with pytest.raises(Mine) as info:
        async with capkern.boot(paging=False) as k:
            k.spawn(forever)
            raise Mine("body") from cause
    assert info.value.__cause__ is cause


async def test_cancelling_around_the_boot_block_works() -> None:
    with trio.move_on_after(10) as scope:
        async with capkern.boot(paging=False) as k:
            pid = k.spawn(forever)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert k.status(pid) is not None and k.status(pid).state == "killed"  # type: ignore[union-attr]


@pytest.mark.parametrize("options", [
    {"evict_batch": "8"}, {"swap_blocks": None}, {"ram_pages": True}, {"cspace_size": 0},
    {"cspace_size": "big"}, {"pager_deadline": math.nan}, {"pager_deadline": math.inf},
    {"crypt_deadline": -1}, {"blockdev_latency": -0.5}, {"blockdev": 5},
    {"limits": {"max_caps": 1}}, {"pager": "lru"}, {"blockdev_server": 3}, {"policy": 1},
])
async def test_bad_boot_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(capkern.ConfigError):
        async with capkern.boot(**options):
            pass


# -- process management with bad input -----------------------------------------------------


@pytest.mark.parametrize("pid", [[1], {"pid": 1}, True, 1.0, "1", None, -1, 0])
async def test_bad_pids_are_no_such_process(pid: Any) -> None:
    async with capkern.boot(paging=False) as k:
        assert k.spawn(forever) == 1
        for call in (k.kill, k.status, k.reap, k.capabilities):
            if pid == 0 and call == k.capabilities:
                continue  # pid 0 is the root's CSpace there
            with pytest.raises(capkern.NoSuchProcess):
                call(pid)
        with pytest.raises(capkern.NoSuchProcess):
            await k.wait(pid)
        assert k.status(1) is None  # nothing happened to pid 1


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


@pytest.mark.parametrize("which", list(BAD_CAPS))
async def test_bad_caps_mapping_is_a_config_error(which: str) -> None:
    async with capkern.boot(paging=False) as k:
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


async def test_spawn_bad_name_and_kind() -> None:
    async with capkern.boot(paging=False) as k:
        with pytest.raises(capkern.ConfigError):
            k.spawn(forever, name=b"x")  # type: ignore[arg-type]
        for kind in ("kernel", "root", ""):
            with pytest.raises(capkern.ConfigError):
                k.spawn(forever, kind=kind)
        assert k.domains() == []


async def test_root_api_bad_arguments_are_typed() -> None:
    async with capkern.boot(paging=False) as k:
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


async def test_concurrent_waiters_and_wait_after_reap() -> None:
    async with capkern.boot(paging=False) as k:
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


# -- a malicious domain's arguments ------------------------------------------------------------


async def test_domain_bad_arguments_are_typed_errors() -> None:
    seen: dict[str, str] = {}

    async def prober(proc: Process) -> None:
        ep = proc.new_endpoint("mine")
        attempts: dict[str, Any] = {
            "copy-rights": lambda: proc.copy(ep, "rwz"),
            "copy-none": lambda: proc.copy(ep, None),  # type: ignore[arg-type]
            "mint-range": lambda: proc.mint(ep, 99, 3),  # type: ignore[arg-type]
            "copy-name": lambda: proc.copy(ep, "r", name=5),  # type: ignore[arg-type]
            "mint-name": lambda: proc.mint(ep, "r", 3, name=b"x"),  # type: ignore[arg-type]
            "name-slot-list": lambda: proc.name_slot(ep, ["x"]),  # type: ignore[arg-type]
            "name-slot-int": lambda: proc.name_slot(ep, 7),  # type: ignore[arg-type]
            "name-slot-empty": lambda: proc.name_slot(ep, ""),
            "slot-list": lambda: proc.slot(["x"]),  # type: ignore[arg-type]
            "ep-bytes-name": lambda: proc.new_endpoint(b"x"),  # type: ignore[arg-type]
            "ep-contract": lambda: proc.new_endpoint("c", contract=object()),  # type: ignore[arg-type]
            "ntfn-name": lambda: proc.new_notification(["n"]),  # type: ignore[arg-type]
            "save-caller-name": lambda: proc.save_caller(3),  # type: ignore[arg-type]
            "nbsend-caps-int": lambda: proc.nbsend(ep, "x", caps=5),  # type: ignore[arg-type]
            "nbsend-caps-str": lambda: proc.nbsend(ep, "x", caps="mine"),
        }
        for what, attempt in attempts.items():
            try:
                attempt()
                seen[what] = "accepted"
            except capkern.CapkernError as exc:
                seen[what] = type(exc).__name__
        await trio.sleep_forever()

    async with capkern.boot(paging=False) as k:
        pid = k.spawn(prober)
        await trio.testing.wait_all_tasks_blocked()
        assert k.status(pid) is None  # nothing crashed the prober either
        assert "accepted" not in seen.values(), seen
        assert seen["slot-list"] == "InvalidSlot"
        assert seen["nbsend-caps-int"] == seen["nbsend-caps-str"] == "MalformedMessage"
        # and it could not leave anything in kernel state that breaks the operator's tools
        dump = json.loads(json.dumps(k.dump()))
        (mine,) = [d for d in dump["domains"] if d["pid"] == pid]
        assert [c["name"] for c in mine["caps"]] == ["mine"]


async def test_reply_with_a_bad_cap_name_keeps_the_caller_answerable(
        autojump_clock: trio.abc.Clock) -> None:
    errors: list[str] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        try:
            proc.reply("ok", caps=["no-such-slot"])
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)
        proc.reply("ok", msg.body)
        msg = await proc.recv("service")
        slot = proc.save_caller("later")
        try:
            proc.reply_to(slot, "ok", caps=["no-such-slot"])
        except capkern.CapkernError as exc:
            errors.append(type(exc).__name__)
        proc.reply_to(slot, "ok", msg.body)
        await trio.sleep_forever()

    async def client(proc: Process) -> int:
        first = await proc.call("server", "q", 1)
        second = await proc.call("server", "q", 2)
        total: int = first.body * 10 + second.body
        return total

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("svc")
        k.spawn(server, caps={"service": Grant(ep, "rg")})
        pid = k.spawn(client, caps={"server": Grant(ep, "wg")})
        with trio.fail_after(5):
            assert (await k.wait(pid)).code == 12
        assert errors == ["InvalidSlot", "InvalidSlot"]


async def test_save_caller_into_a_full_cspace_keeps_the_reply(
        autojump_clock: trio.abc.Clock) -> None:
    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        while True:  # fill the CSpace
            try:
                proc.new_notification()
            except capkern.CSpaceFull:
                break
        with pytest.raises(capkern.CSpaceFull):
            proc.save_caller("c")
        proc.reply("ok", msg.body)
        await trio.sleep_forever()

    async def client(proc: Process) -> int:
        got = await proc.call("server", "q", 5)
        code: int = got.body
        return code

    async with capkern.boot(paging=False, cspace_size=4) as k:
        ep = k.new_endpoint("svc")
        srv = k.spawn(server, caps={"service": Grant(ep, "r")})
        pid = k.spawn(client, caps={"server": Grant(ep, "w")})
        with trio.fail_after(5):
            assert (await k.wait(pid)).code == 5
        assert k.status(srv) is None


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


# -- kernel events, the IPC trace and the dump ---------------------------------------------------


async def test_a_failing_event_subscriber_does_not_crash_the_kernel(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("watcher bug")

    async with capkern.boot(paging=False) as k:
        k.events.subscribe(broken)
        k.events.subscribe(lambda e: seen.append(e.kind))
        pid = k.spawn(forever)
        await trio.testing.wait_all_tasks_blocked()
        k.kill(pid)
        assert (await k.wait(pid)).state == "killed"
        assert (await k.wait(k.spawn(lambda proc: trio.sleep(0)))).ok
        with pytest.raises(capkern.ConfigError):
            k.events.subscribe("not callable")  # type: ignore[arg-type]
    assert seen.count("spawn") == 2 and "kill" in seen and "exit" in seen
    assert "watcher bug" in caplog.text


async def test_trace_writes_json(autojump_clock: trio.abc.Clock) -> None:
    async def client(proc: Process) -> None:
        await proc.call("server", "hello", {"n": 1})

    async with capkern.boot(paging=False, trace=True) as k:
        ep = k.new_endpoint("svc")
        k.spawn(echo_once_then_sleep, name="srv", caps={"service": Grant(ep, "r")})
        k.spawn(client, name="cli", caps={"server": Grant(ep, "w", badge=9)})
        await trio.sleep(1)
        out = io.StringIO()
        k.trace.write_json(out)
    records = json.loads(out.getvalue())
    assert [(r["op"], r["domain"], r["label"]) for r in records] == [
        ("call", "cli", "hello"), ("reply", "srv", "ok")]
    assert records[0]["badge"] == 9 and records[0]["body_bytes"] > 0
    assert set(records[0]) == {"time", "op", "pid", "domain", "object", "label", "badge",
                               "body_bytes", "caps"}


async def test_dump_is_complete_and_json(autojump_clock: trio.abc.Clock) -> None:
    async def holds_call(proc: Process) -> None:
        await proc.recv("service")  # receives a call and never answers
        await trio.sleep_forever()

    async def caller(proc: Process) -> None:
        await proc.call("server", "add", {"a": 1, "b": 2})

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("adder", contract=ADD)
        idle = k.new_endpoint("idle")
        srv = k.spawn(holds_call, name="srv", caps={"service": Grant(ep, "r")})
        cli = k.spawn(caller, name="cli", caps={"server": Grant(ep, "w")})
        waiting = k.spawn(caller, name="waiting", caps={"server": Grant(ep, "w")})
        rcv = k.spawn(forever_recv, name="rcv", caps={"service": Grant(idle, "r")})
        gone = k.spawn(lambda proc: proc.exit(3), name="gone")
        await trio.sleep(1)
        dump = json.loads(json.dumps(k.dump()))
    doms = {d["pid"]: d for d in dump["domains"]}
    objects = {o["oid"]: o for o in dump["objects"]}
    assert doms[gone]["exit"] == {"state": "exited", "code": 3, "error": None}
    assert doms[srv]["exit"] is None
    # the server's pending implicit reply capability is part of the picture
    reply = objects[doms[srv]["reply"]]
    assert reply["kind"] == "Reply" and reply["state"] == "waiting"
    assert reply["caller"] in (cli, waiting)  # whichever called first is being served
    assert doms[cli]["reply"] is None
    (ep_obj,) = [o for o in objects.values() if o["name"] == "adder"]
    assert ep_obj["contract"] == "adder"
    assert ep_obj["senders"] == [waiting if reply["caller"] == cli else cli]
    (idle_obj,) = [o for o in objects.values() if o["name"] == "idle"]
    assert idle_obj["receivers"] == [rcv] and idle_obj["contract"] is None


async def forever_recv(proc: Process) -> None:
    await proc.recv("service")


# -- counters and shutdown ------------------------------------------------------------------


async def test_counters_add_up_over_every_way_to_end() -> None:
    async def crash(proc: Process) -> None:
        raise RuntimeError("crash")

    async def sys_exit(proc: Process) -> None:
        sys.exit(2)

    async with capkern.boot(paging=False) as k:
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
