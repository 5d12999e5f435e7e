"""Page events and the Chrome/Perfetto trace export.

The validator below is written from the public Trace Event Format (the JSON object form:
``traceEvents`` plus optional ``displayTimeUnit``/``otherData``; phases ``X`` complete,
``i`` instant with scope ``g|p|t``, ``s``/``f`` flow start/end with an ``id`` and, for
``f``, binding point ``bp: "e"`` (enclosing slice); ``M`` metadata naming processes and
threads).  On top of the syntax it checks what makes Perfetto draw the run: slices on one
track nest, every flow has one start and one end, each bound to a slice that encloses
it on its own track, and every track is named.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio

import capkern
from capkern import Grant, programs
from capkern._cli import main
from capkern._proc import Process
from capkern._trace import PAGE_EVENTS, IpcTrace, PageTrace
from capkern._trace_export import chrome_trace

_PHASES = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "P", "O", "N", "D",
           "M", "R", "c", "(", ")"}
_METADATA = {"process_name", "process_labels", "process_sort_index", "thread_name",
             "thread_sort_index"}


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def validate_trace(doc: Any) -> list[str]:
    """Every way ``doc`` breaks the trace-event format (or would not draw); [] if none."""
    errors: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["top level must be an object with a traceEvents array"]
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        errors.append("displayTimeUnit must be 'ms' or 'ns'")
    if "otherData" in doc and not isinstance(doc["otherData"], dict):
        errors.append("otherData must be an object")
    named: set[tuple[Any, Any]] = set()
    slices: dict[tuple[Any, Any], list[tuple[float, float]]] = defaultdict(list)
    flows: dict[Any, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    used: set[tuple[Any, Any]] = set()
    for n, e in enumerate(doc["traceEvents"]):
        where = f"event {n} ({e.get('ph') if isinstance(e, dict) else e!r})"
        if not isinstance(e, dict):
            errors.append(f"{where}: not an object")
            continue
        ph = e.get("ph")
        if ph not in _PHASES:
            errors.append(f"{where}: unknown phase {ph!r}")
            continue
        if not isinstance(e.get("name"), str):
            errors.append(f"{where}: name must be a string")
        if type(e.get("pid")) is not int or type(e.get("tid")) is not int:
            errors.append(f"{where}: pid and tid must be integers")
        if "args" in e and not isinstance(e["args"], dict):
            errors.append(f"{where}: args must be an object")
        if "cat" in e and not isinstance(e["cat"], str):
            errors.append(f"{where}: cat must be a string")
        track = (e.get("pid"), e.get("tid"))
        if ph == "M":
            if e.get("name") not in _METADATA:
                errors.append(f"{where}: unknown metadata {e.get('name')!r}")
            elif e["name"] == "thread_name":
                if not isinstance(e.get("args", {}).get("name"), str):
                    errors.append(f"{where}: thread_name needs args.name")
                named.add(track)
            continue
        used.add(track)
        if not _number(e.get("ts")) or e["ts"] < 0:
            errors.append(f"{where}: ts must be a non-negative number of microseconds")
            continue
        if ph == "X":
            if not _number(e.get("dur")) or e["dur"] < 0:
                errors.append(f"{where}: a complete event needs dur >= 0")
            else:
                slices[track].append((e["ts"], e["ts"] + e["dur"]))
        elif ph in ("i", "I"):
            if e.get("s", "t") not in ("g", "p", "t"):
                errors.append(f"{where}: instant scope must be g, p or t")
        elif ph in ("s", "t", "f"):
            if "id" not in e or not isinstance(e.get("cat"), str):
                errors.append(f"{where}: flow events need an id and a cat")
            if ph == "f" and e.get("bp", "e") != "e":
                errors.append(f"{where}: flow end binding point must be 'e'")
            flows[(e.get("cat"), e.get("id"))][ph].append(e)
    for track, spans in slices.items():  # slices on one track must nest
        spans.sort(key=lambda s: (s[0], -s[1]))
        stack: list[tuple[float, float]] = []
        for start, end in spans:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1] + 1e-6:
                errors.append(f"track {track}: slice {start}..{end} overlaps "
                              f"{stack[-1][0]}..{stack[-1][1]} without nesting")
            stack.append((start, end))

    def enclosed(e: dict[str, Any]) -> bool:
        return any(a <= e["ts"] <= b for a, b in slices[(e["pid"], e["tid"])])

    for key, phases in flows.items():
        if len(phases["s"]) != 1 or len(phases["f"]) != 1:
            errors.append(f"flow {key}: needs one start and one end, has "
                          f"{len(phases['s'])} and {len(phases['f'])}")
            continue
        begin, finish = phases["s"][0], phases["f"][0]
        if finish["ts"] < begin["ts"]:
            errors.append(f"flow {key}: ends before it starts")
        for e in (begin, finish):
            if not enclosed(e):
                errors.append(f"flow {key}: {e['ph']} at {e['ts']} has no slice to bind to")
    for track in used - named:
        errors.append(f"track {track} has no thread_name")
    return errors


def test_validator_catches_broken_traces() -> None:
    """The validator is not a rubber stamp: each kind of breakage is reported."""
    ok = {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "a"}}
    x = {"name": "a", "ph": "X", "ts": 0, "dur": 10, "pid": 1, "tid": 1}
    assert validate_trace({"traceEvents": [ok, x]}) == []
    assert validate_trace([x])
    assert validate_trace({"traceEvents": [ok, {**x, "ph": "Q"}]})
    assert validate_trace({"traceEvents": [ok, {**x, "dur": -1}]})
    assert validate_trace({"traceEvents": [ok, {**x, "ts": float("nan")}]})
    assert validate_trace({"traceEvents": [x]})  # unnamed track
    assert validate_trace({"traceEvents": [ok, x, {**x, "ts": 5}]})  # 5..15 crosses 0..10
    flow_s = {"name": "m", "cat": "ipc", "ph": "s", "id": 1, "ts": 1, "pid": 1, "tid": 1}
    flow_f = {**flow_s, "ph": "f", "bp": "e", "ts": 2}
    assert validate_trace({"traceEvents": [ok, x, flow_s, flow_f]}) == []
    assert validate_trace({"traceEvents": [ok, x, flow_s]})  # no end
    assert validate_trace({"traceEvents": [ok, x, flow_s, {**flow_f, "ts": 50}]})  # unbound
    assert validate_trace({"traceEvents": [ok, x, {**flow_s, "ts": 3}, flow_f]})  # backwards


def test_demo_trace_is_valid_trace_event_json(tmp_path: Path) -> None:
    """The honest run of ``capkern demo --trace`` writes a trace Perfetto can draw."""
    path = tmp_path / "demo.json"
    assert main(["demo", "--quick", "--ram", "6", "--processes", "2", "--pages", "10",
                 "--trace", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert validate_trace(doc) == []
    events = doc["traceEvents"]
    titles = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"kernel", "crypt (pid 1)", "blockdev (pid 2)", "pager (pid 3)", "ws0 (pid 4)",
            "ws1 (pid 5)"} <= titles
    page = [e for e in events if e.get("cat") == "page"]
    kinds = {e["name"] for e in page}
    assert {"fault", "zero-fill", "page-in", "eviction", "discard"} <= kinds
    # every fault (the trap, an instant) ends as one slice, on the faulting process's track
    traps = [e for e in page if e["name"] == "fault"]
    ends = [e for e in page if e["name"] in ("zero-fill", "page-in")]
    assert len(traps) == len(ends) >= 2 * 10 * 2
    # the working-set processes (pids 4, 5) fault; so do the demo's remap process and
    # its hostile one, which get the next pids; the kernel and servers never do
    assert {e["tid"] for e in traps} == {e["tid"] for e in ends}
    assert {4, 5} <= {e["tid"] for e in traps} and min(e["tid"] for e in traps) == 4
    assert all(e["dur"] >= 0 and e["ph"] == "X" for e in ends)
    # the kernel's calls to the pager and sealer are arrows out of the kernel's track
    starts = [e for e in events if e["ph"] == "s"]
    assert any(e["tid"] == 0 for e in starts) and len(starts) > len(ends)


async def test_page_events_carry_pid_page_handle_and_time_since_boot(
        capkern_clock: trio.testing.MockClock) -> None:
    async def toucher(proc: Process) -> None:
        base = proc.mmap(4 * 4096)
        await trio.sleep(5)
        for page in range(4):
            await proc.write(base + page * 4096, b"x")
        for page in range(4):
            assert await proc.read(base + page * 4096, 1) == b"x"

    await trio.sleep(100)  # boot long after the clock started: times are since boot
    async with capkern.boot(ram_pages=2, evict_batch=1, trace=True) as k:
        pid = k.spawn(toucher)
        assert (await k.wait(pid)).ok
        records = list(k.page_trace.records)
    assert {r.kind for r in records} <= set(PAGE_EVENTS)
    mine = [r for r in records if r.pid == pid]
    fills = [r for r in mine if r.kind == "zero-fill"]
    assert sorted(r.vpn - fills[0].vpn for r in fills) == [0, 1, 2, 3]
    assert all(5 <= r.time < 10 for r in mine)  # seconds since boot, not since the clock
    ins = [r for r in mine if r.kind == "page-in"]
    evicted = [r for r in mine if r.kind == "eviction"]
    assert ins and evicted and all(r.handle for r in ins + evicted)
    assert {r.handle for r in ins} <= {r.handle for r in evicted}  # paged in what went out
    assert len([r for r in mine if r.kind == "discard"]) == 4  # the exit discarded all four


async def test_ipc_records_use_time_since_boot_and_link_deliveries(
        capkern_clock: trio.testing.MockClock) -> None:
    async def client(proc: Process) -> None:
        await trio.sleep(3)
        await proc.call("server", "echo", "hi")

    await trio.sleep(50)
    async with capkern.boot(paging=False, trace=True) as k:
        ep = k.new_endpoint("echo")
        k.spawn(programs.echo_server, caps={"service": Grant(ep, "r")})
        assert (await k.wait(k.spawn(client, caps={"server": Grant(ep, "w")}))).ok
        calls = [(r, f) for r, f in zip(k.trace.records, k.trace.flows, strict=True)
                 if r.op == "call"]
        events = [e for e in k.events.events if e.kind == "spawn"]
    (call, flow), = calls
    assert 3 <= call.time < 4 and flow
    got = [d for d in k.trace.deliveries if d.flow == flow]
    assert len(got) == 1 and got[0].label == "echo" and got[0].time >= call.time
    assert all(e.time < 1 for e in events)  # kernel events: since boot too


async def test_tracing_off_records_nothing_and_exports_an_empty_valid_trace(
        tmp_path: Path) -> None:
    async with capkern.boot(ram_pages=2, evict_batch=1) as k:
        assert (await k.wait(k.spawn(programs.sequential, 4, 1))).ok
        assert len(k.page_trace.records) == 0 and len(k.trace.deliveries) == 0
        k.export_trace(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert validate_trace(doc) == []
    assert [e for e in doc["traceEvents"] if e["ph"] != "M"] == []


def test_page_trace_is_bounded() -> None:
    trace = PageTrace(capacity=5, enabled=True, clock=lambda: 42.0)
    trace.owners[1] = 7
    for vpn in range(12):
        trace.page("fault", 1, vpn, 0)
    assert len(trace.records) == 5 and trace.dropped == 7
    assert [r.vpn for r in trace.records] == [7, 8, 9, 10, 11]
    assert {r.pid for r in trace.records} == {7} and {r.time for r in trace.records} == {42}


def test_flows_whose_start_left_the_ring_are_not_half_drawn() -> None:
    """A delivery whose send record was pushed out of the ring gets no dangling arrow."""
    from capkern._trace import Delivery, IpcRecord

    ipc = IpcTrace(capacity=2, enabled=True)
    for n in range(3):
        flow = ipc.new_flow()
        ipc.add(IpcRecord(n, "send", 1, "a", "Endpoint#1", "m", 0, 1, 0), flow)
        ipc.delivered(Delivery(n + 0.5, 2, "b", "m", flow))
    doc = chrome_trace(ipc, PageTrace(), {1: ("a", "process"), 2: ("b", "process")})
    assert validate_trace(doc) == []
    assert sorted(e["id"] for e in doc["traceEvents"] if e["ph"] == "f") == [2, 3]


async def test_undelivered_messages_draw_no_arrow(tmp_path: Path,
                                                 capkern_clock: trio.testing.MockClock) -> None:
    """An nbsend nobody received and a call cancelled while queued leave a slice on the
    sender's track but no half arrow."""
    async def sender(proc: Process) -> None:
        assert proc.nbsend("server", "dropped") is False
        with trio.move_on_after(1):
            await proc.call("server", "never-taken")

    async with capkern.boot(paging=False, trace=True) as k:
        ep = k.new_endpoint("nobody-listens")
        assert (await k.wait(k.spawn(sender, caps={"server": Grant(ep, "w")}))).ok
        k.export_trace(tmp_path / "t.json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert validate_trace(doc) == []
    names = {e["name"] for e in doc["traceEvents"] if e["ph"] == "X"}
    assert {"nbsend dropped", "call never-taken"} <= names
    assert not [e for e in doc["traceEvents"] if e["ph"] in ("s", "f")]
