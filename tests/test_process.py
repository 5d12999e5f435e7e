"""Process lifecycle through the kernel: spawn/wait/exit codes, crashes that stay inside
their domain, kill, argument copying, introspection (capabilities, dump, domains), a
clean shutdown when the boot block is left with domains still running, and the removal
of a dead domain's capabilities.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process


async def echo(proc: Process) -> None:
    msg = await proc.recv("service")
    while True:
        msg = await proc.reply_recv("service", "ok", msg.body)


async def forever(proc: Process) -> None:
    await trio.sleep_forever()


# -- spawn / wait / exit ---------------------------------------------------------------------


async def test_spawn_returns_pids_and_wait_returns_exit_status() -> None:
    async def returns(proc: Process, code: int) -> int:
        await trio.sleep(0)
        return code

    async def returns_none(proc: Process) -> None:
        return None

    async def returns_junk(proc: Process) -> Any:
        return "not an int"

    async with capkern.boot(paging=False) as k:
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


async def test_crash_is_contained_and_recorded() -> None:
    async def crasher(proc: Process) -> None:
        await trio.sleep(0)
        raise ValueError("program bug 123")

    async def client(proc: Process) -> int:
        return 0 if (await proc.call("s", "ping", "pong?")).body == "pong?" else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(echo, name="echo", caps={"service": Grant(ep, "r")})
        before = k.stats.crashes
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
        assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
        states = {d.pid: d.state for d in k.domains()}
        assert states[pid] == "failed" and states[srv] == "running"


async def test_crash_while_others_talk_concurrently() -> None:
    results: list[int] = []

    async def client(proc: Process, n: int) -> None:
        for i in range(20):
            results.append((await proc.call("s", "x", i)).body)
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


async def test_kill_and_unknown_pids(autojump_clock: trio.abc.Clock) -> None:
    async with capkern.boot(paging=False) as k:
        early = k.spawn(forever, name="early")
        k.kill(early)  # before it ever ran
        assert (await k.wait(early)).state == "killed"
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


# -- arguments -------------------------------------------------------------------------------


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
    "bad", [object(), {1, 2}, [lambda: 0], {"k": trio.Event()}, 1 << 80], ids=repr
)
async def test_non_serialisable_arg_is_refused_at_spawn(bad: Any) -> None:
    async with capkern.boot(paging=False) as k:
        spawns = k.stats.spawns
        with pytest.raises(capkern.CapkernError) as info:
            k.spawn(forever, bad)
        assert isinstance(info.value, capkern.UnencodableBody)
        assert k.stats.spawns == spawns and k.domains() == []


async def test_spawn_rejects_bad_program_and_bad_grants() -> None:
    async with capkern.boot(paging=False) as k:
        with pytest.raises(capkern.ConfigError):
            k.spawn("not a program")  # type: ignore[arg-type]
        ep = k.new_endpoint()
        with pytest.raises(capkern.CapabilityError):
            k.spawn(forever, caps={"x": capkern.RootCap(999, "forged")})
        with pytest.raises(capkern.BadgeError):
            k.spawn(forever, caps={"x": Grant(k.mint(ep, "w", badge=1), "w", badge=2)})
        assert k.domains() == []


# -- introspection ---------------------------------------------------------------------------


async def test_capabilities_list_slot_name_kind_rights_badge() -> None:
    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("svc")
        n = k.new_notification("bell")
        pid = k.spawn(forever, name="holder", caps={
            "svc": Grant(ep, "w", badge=7),
            "bell": Grant(n, "r"),
            "all": ep,
        })
        caps = {c.name: c for c in k.capabilities(pid)}
        assert set(caps) == {"svc", "bell", "all"}
        assert (caps["svc"].kind, caps["svc"].rights, caps["svc"].badge) == ("Endpoint", "-w-", 7)
        assert (caps["bell"].kind, caps["bell"].rights, caps["bell"].badge) == (
            "Notification", "r--", 0
        )
        assert (caps["all"].rights, caps["all"].badge) == ("rwg", 0)
        assert caps["svc"].object_name == "svc" and caps["bell"].object_name == "bell"
        assert caps["svc"].oid == caps["all"].oid != caps["bell"].oid
        assert len({c.slot for c in caps.values()}) == 3
        assert all(c.slot > 0 for c in caps.values())
        assert caps["svc"].parent == (0, ep.slot) and caps["bell"].parent == (0, n.slot)
        # the root's own capabilities (pid 0)
        root = {c.slot: c for c in k.capabilities(0)}
        assert root[ep.slot].kind == "Endpoint" and root[ep.slot].parent is None
        with pytest.raises(capkern.NoSuchProcess):
            k.capabilities(4242)
        k.kill(pid)


async def test_dump_is_json_and_shows_derivation() -> None:
    got_cap = trio.Event()

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("in")
        proc.name_slot(msg.caps[0], "gift")
        got_cap.set()
        await trio.sleep_forever()

    async def giver(proc: Process) -> None:
        await proc.send("out", "take", None, caps=["n"])
        await trio.sleep_forever()

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("pipe")
        n = k.new_notification("bell")
        minted = k.mint(n, "w", badge=3)
        rcv = k.spawn(receiver, name="rcv", caps={"in": Grant(ep, "r")})
        giv = k.spawn(giver, name="giv", caps={"out": Grant(ep, "wg"), "n": minted})
        await got_cap.wait()
        dump = k.dump()
        again = json.loads(json.dumps(dump))
        assert again == json.loads(json.dumps(again))
        doms = {d["pid"]: d for d in again["domains"]}
        assert doms[0]["name"] == "root" and doms[0]["kind"] == "kernel"
        assert doms[rcv]["name"] == "rcv" and doms[rcv]["state"] == "running"
        root_caps = {c["slot"]: c for c in doms[0]["caps"]}
        assert root_caps[n.slot]["parent"] is None
        assert root_caps[minted.slot]["parent"] == [0, n.slot]
        assert root_caps[minted.slot]["badge"] == 3
        giv_n = next(c for c in doms[giv]["caps"] if c["name"] == "n")
        assert giv_n["parent"] == [0, minted.slot]
        gift = next(c for c in doms[rcv]["caps"] if c["name"] == "gift")
        assert gift["parent"] == [giv, giv_n["slot"]]
        assert gift["object"] == giv_n["object"] == root_caps[n.slot]["object"]
        assert gift["rights"] == "-w-" and gift["badge"] == 3
        objects = {o["oid"]: o for o in again["objects"]}
        assert objects[gift["object"]] == {"oid": gift["object"], "kind": "Notification",
                                           "name": "bell"}
        assert again["stats"]["spawns"] == 2 and again["stats"]["caps_transferred"] == 1


async def test_domains_show_states() -> None:
    async def ok(proc: Process) -> int:
        return 0

    async def bad(proc: Process) -> None:
        raise RuntimeError("x")

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        p_ok = k.spawn(ok, name="ok")
        p_bad = k.spawn(bad, name="bad")
        p_run = k.spawn(forever, name="run", kind="server", caps={"e": ep})
        p_kill = k.spawn(forever, name="kill")
        listing = {d.pid: d for d in k.domains()}
        assert set(listing) == {p_ok, p_bad, p_run, p_kill}
        assert all(d.state in ("starting", "running") for d in listing.values())
        await k.wait(p_ok)
        await k.wait(p_bad)
        k.kill(p_kill)
        await k.wait(p_kill)
        listing = {d.pid: d for d in k.domains()}
        assert {pid: d.state for pid, d in listing.items()} == {
            p_ok: "exited", p_bad: "failed", p_run: "running", p_kill: "killed"
        }
        assert listing[p_run].kind == "server" and listing[p_ok].kind == "process"
        assert listing[p_run].caps == 1 and listing[p_ok].caps == 0
        assert listing[p_run].exit is None
        bad_exit = listing[p_bad].exit
        assert bad_exit is not None and bad_exit.state == "failed"
        assert 0 not in listing  # the root is not a listed domain
        assert k.pid_of("run") == p_run
        with pytest.raises(capkern.NoSuchProcess):
            k.pid_of("ok")  # ended


# -- shutdown and teardown -------------------------------------------------------------------


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
        async with capkern.boot(paging=False) as k:
            ep = k.new_endpoint()
            pids = [
                k.spawn(stubborn, name="stubborn"),
                k.spawn(holder, name="holder", caps={"service": Grant(ep, "r")}),
                k.spawn(caller, name="caller", caps={"s": Grant(ep, "w")}),
                k.spawn(forever, name="plain"),
            ]
            await trio.testing.wait_all_tasks_blocked()
    # the block exited with no exception; every domain ended and was torn down
    assert sorted(finalised) == ["caller", "holder", "stubborn"]
    for pid in pids:
        status = k.status(pid)
        assert status is not None and status.state == "killed"
        assert k.capabilities(pid) == []
    assert k.stats.crashes == 0
    with pytest.raises(capkern.KernelShutdown):
        k.spawn(forever)


async def test_dead_domain_capabilities_are_removed() -> None:
    async def short(proc: Process) -> int:
        proc.copy("e", "w", name="copy")
        proc.mint("n", "w", 9, name="minted")
        proc.new_endpoint("own")
        assert len(proc.caps()) == 5
        return 0

    async with capkern.boot(paging=False) as k:
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


async def test_dead_client_frees_nothing_it_does_not_own() -> None:
    """A domain's end removes only its own capabilities, not the server's or root's."""

    async def client(proc: Process) -> int:
        return 0 if (await proc.call("s", "x", 1)).body == 1 else 1

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint()
        srv = k.spawn(echo, caps={"service": Grant(ep, "r")})
        before = k.capabilities(srv)
        root_before = k.capabilities(0)
        assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
        assert k.capabilities(srv) == before
        assert k.capabilities(0) == root_before
        assert (await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))).ok
