"""Looking into a running kernel: event subscribers (a failing one is contained), the IPC
trace as JSON, and a complete JSON dump of domains, capabilities and objects."""

from __future__ import annotations

import io
import json

import pytest
import trio
import trio.testing

import capkern
from capkern import Grant, Process
from capkern.contract import Contract, Int, Op, Struct
from capkern.trace import Event

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
