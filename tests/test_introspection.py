"""Looking into a running kernel: capabilities (slot, name, kind, rights, badge),
domains and their states, kernel events and their subscribers (a failing one is
contained), the IPC trace as JSON, and a complete JSON dump with the derivation tree."""

from __future__ import annotations

import io
import json

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, Op, Struct
from capkern._trace import Event

from .helpers import forever, forever_recv

ADD = Contract(
    "adder",
    {"add": Op(Struct({"a": Int(), "b": Int()}), Struct({"sum": Int()}), frozenset())},
)


async def echo_once_then_sleep(proc: Process) -> None:
    msg = await proc.recv("service")
    proc.reply("ok", msg.body)
    await trio.sleep_forever()


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


async def test_capabilities_list_slot_name_kind_rights_badge(bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
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


async def test_dump_is_json_and_shows_derivation(bare_kernel: capkern.Kernel) -> None:
    got_cap = trio.Event()

    async def receiver(proc: Process) -> None:
        msg = await proc.recv("in")
        proc.name_slot(msg.caps[0], "gift")
        got_cap.set()
        await trio.sleep_forever()

    async def giver(proc: Process) -> None:
        await proc.send("out", "take", None, caps=["n"])
        await trio.sleep_forever()

    k = bare_kernel
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


async def test_domains_show_states(bare_kernel: capkern.Kernel) -> None:
    async def ok(proc: Process) -> int:
        return 0

    async def bad(proc: Process) -> None:
        raise RuntimeError("x")

    k = bare_kernel
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


async def test_introspection_capabilities_domains_dump(bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
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


async def test_kernel_event_subscribers_see_events() -> None:
    seen: list[str] = []
    async with capkern.boot(paging=False) as k:
        k.events.subscribe(lambda e: seen.append(e.kind))
        await k.wait(k.spawn(lambda proc: trio.sleep(0)))
    assert "spawn" in seen and "exit" in seen
