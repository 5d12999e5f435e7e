"""Kernel traces as Chrome/Perfetto trace-event JSON (sans-IO, plus one file writer).

The output is the JSON object form of the Trace Event Format that ui.perfetto.dev and
chrome://tracing open: ``{"traceEvents": [...], "displayTimeUnit": "ms", ...}``.

* One *track* per domain: every event of a domain carries ``pid`` 1 (the booted system)
  and ``tid`` = the domain's pid (0 is the kernel itself); ``M`` metadata events name
  each track ``"name (pid N)"`` and sort them by pid.
* Page events become slices on the owning domain's track: a fault that was resolved is a
  complete (``X``) slice named ``zero-fill``, ``page-in`` or ``fault-error`` lasting from
  the trap to the mapping; the trap itself, evictions and discards are thread-scoped
  instants (``i``).
* IPC: each send, call, nbsend or reply is a short ``X`` slice on the sender's track, and
  each delivery a ``recv`` slice on the receiver's; a flow start (``s``) bound to the
  sending slice and a flow end (``f``, binding point ``e``: the enclosing slice) bound to
  the receiving one draw the message as an arrow between the two tracks.

Timestamps are microseconds since boot.  IPC slices last at most one microsecond and
never overlap the next event on their track, so slices on a track always nest.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from typing import Any

from ._pagefmt import PAGE_SIZE
from ._trace import IpcTrace, PageTrace

__all__ = ["SYSTEM_PID", "chrome_trace", "write_trace"]

SYSTEM_PID = 1  # the trace-event "process" that holds one track per domain
_US = 1_000_000.0
_IPC_SLICE_US = 1.0
_SPANS = ("zero-fill", "page-in", "fault-error")


def _us(seconds: float) -> float:
    return round(max(seconds, 0.0) * _US, 3)


def chrome_trace(ipc: IpcTrace, pages: PageTrace,
                 names: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """The trace-event document for the recorded IPC and page events.

    ``names`` maps a pid to ``(domain name, kind)``, for the track titles; pids seen only
    in the records are named from them (IPC records carry the domain's name).
    """
    tracks: dict[int, str] = {pid: name for pid, (name, _kind) in names.items()}
    slices: dict[int, list[dict[str, Any]]] = defaultdict(list)  # tid -> X slices
    events: list[dict[str, Any]] = []

    # an arrow needs both ends: a message dropped (nbsend with no receiver, a caller
    # cancelled while queued) or whose other end left the ring buffer gets none
    delivered = {got.flow for got in ipc.deliveries}
    flows_started = {f for f in ipc.flows if f}
    for record, flow in zip(ipc.records, ipc.flows, strict=True):
        tracks.setdefault(record.pid, record.domain)
        x = {"name": f"{record.op} {record.label}", "cat": "ipc", "ph": "X",
             "ts": _us(record.time), "pid": SYSTEM_PID, "tid": record.pid,
             "args": {"object": record.object, "badge": record.badge,
                      "body_bytes": record.body_bytes, "caps": record.caps, "flow": flow}}
        slices[record.pid].append(x)
        if flow in delivered:
            events.append({"name": "message", "cat": "ipc", "ph": "s", "id": flow,
                           "ts": x["ts"], "pid": SYSTEM_PID, "tid": record.pid})
    for got in ipc.deliveries:
        tracks.setdefault(got.pid, got.domain)
        x = {"name": f"recv {got.label}", "cat": "ipc", "ph": "X", "ts": _us(got.time),
             "pid": SYSTEM_PID, "tid": got.pid, "args": {"flow": got.flow}}
        slices[got.pid].append(x)
        if got.flow in flows_started:
            events.append({"name": "message", "cat": "ipc", "ph": "f", "bp": "e",
                           "id": got.flow, "ts": x["ts"], "pid": SYSTEM_PID, "tid": got.pid})
    for x in (x for track in slices.values() for x in track):
        x["dur"] = _IPC_SLICE_US
    for page in pages.records:
        tracks.setdefault(page.pid, "unknown" if page.pid < 0 else f"pid {page.pid}")
        args: dict[str, Any] = {"vpn": page.vpn, "handle": f"{page.handle:#x}"}
        if page.vpn >= 0:
            args["address"] = f"{page.vpn * PAGE_SIZE:#x}"
        if page.detail:
            args["detail"] = page.detail
        event: dict[str, Any] = {"name": page.kind, "cat": "page", "ts": _us(page.time),
                                 "pid": SYSTEM_PID, "tid": page.pid, "args": args}
        if page.kind in _SPANS:
            event["ph"] = "X"
            event["dur"] = _us(page.duration)
            slices[page.pid].append(event)
        else:
            event["ph"] = "i"
            event["s"] = "t"
            events.append(event)

    for track in slices.values():
        _fit(track)
    meta: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": SYSTEM_PID, "tid": 0,
         "args": {"name": "capkern"}}]
    for pid in sorted(tracks):
        title = "kernel" if pid == 0 else f"{tracks[pid]} (pid {pid})"
        meta.append({"name": "thread_name", "ph": "M", "pid": SYSTEM_PID, "tid": pid,
                     "args": {"name": title}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": SYSTEM_PID, "tid": pid,
                     "args": {"sort_index": pid}})
    # slices before the flow events at the same timestamp: a flow binds to the slice
    # that encloses it, so that slice must already be open when the flow is read
    body = [x for track in slices.values() for x in track] + events
    body.sort(key=lambda e: (e["ts"], 0 if e["ph"] == "X" else 1))
    return {"traceEvents": meta + body, "displayTimeUnit": "ms",
            "otherData": {"source": "capkern", "clock": "seconds since boot (trio clock)",
                          "page_records_dropped": pages.dropped}}


def _fit(track: list[dict[str, Any]]) -> None:
    """Make one track's slices nest: end each short IPC slice before the next slice on
    the track starts, then clip any slice that would outlast the one enclosing it."""
    track.sort(key=lambda x: (x["ts"], -x["dur"]))
    for here, after in itertools.pairwise(track):
        if here["cat"] == "ipc" and after["ts"] < here["ts"] + here["dur"]:
            here["dur"] = round(after["ts"] - here["ts"], 3)
    open_: list[dict[str, Any]] = []
    for x in track:
        while open_ and open_[-1]["ts"] + open_[-1]["dur"] <= x["ts"]:
            open_.pop()
        if open_:
            x["dur"] = round(min(x["dur"], open_[-1]["ts"] + open_[-1]["dur"] - x["ts"]), 3)
        open_.append(x)


def write_trace(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``doc`` as strict JSON (no NaN) to ``path``."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, allow_nan=False, separators=(",", ":"))
