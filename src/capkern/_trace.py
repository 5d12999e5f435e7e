"""Kernel statistics, the event log and the IPC trace (sans-IO records).

Counters are plain integer attributes so the hot paths pay one attribute increment.
The IPC trace is off unless enabled (one boolean test per message when off); when on it
keeps the newest ``capacity`` records and can be written as JSON.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, TextIO

import trio

from .errors import ConfigError

__all__ = ["PAGE_EVENTS", "Counters", "Delivery", "Event", "EventLog", "IpcRecord", "IpcTrace",
           "PageRecord", "PageTrace"]

log = logging.getLogger("capkern.events")


@dataclass
class Counters:
    """Kernel-wide counters (read them as ``kernel.stats``)."""

    ipc_sends: int = 0
    ipc_calls: int = 0
    ipc_replies: int = 0
    ipc_receives: int = 0
    ipc_in_place: int = 0  # calls answered at the caller's trap (capkern._inplace)
    caps_transferred: int = 0
    caps_dropped: int = 0  # transferred capabilities that did not fit the receiver
    unsolicited_caps: int = 0  # replies refused for carrying capabilities nobody asked for
    ipc_cancelled: int = 0  # blocked IPC cancelled because its capability was removed
    messages_rejected: int = 0
    contract_violations: int = 0
    signals: int = 0
    spawns: int = 0
    exits: int = 0
    crashes: int = 0
    kills: int = 0
    faults: int = 0
    zero_fills: int = 0
    page_ins: int = 0
    readaheads: int = 0  # pages brought in by read-ahead, beyond the faulting one
    evictions: int = 0
    clean_drops: int = 0
    seals: int = 0
    unseals: int = 0
    integrity_faults: int = 0
    page_in_errors: int = 0
    pager_timeouts: int = 0
    pager_protocol_errors: int = 0
    store_failures: int = 0
    server_restarts: int = 0  # isolated servers brought back after their process died
    frames_refused: int = 0  # garbage frames from isolated servers' processes
    pages_lost: int = 0  # sealed pages that died with a server's process
    page_lost_faults: int = 0  # faults failed with PageLost

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Event:
    """Something the kernel wants a human (or a test) to know about."""

    time: float
    kind: str
    pid: int
    domain: str
    detail: str


class EventLog:
    """The newest kernel events, plus subscribers that see each one as it happens."""

    def __init__(self, capacity: int = 4096) -> None:
        self.events: deque[Event] = deque(maxlen=capacity)
        self.counts: dict[str, int] = {}
        self._listeners: list[Any] = []

    def add(self, event: Event) -> None:
        """Record ``event`` and show it to every subscriber.  A subscriber that raises is
        logged and skipped: it runs inside kernel code (spawn, teardown, the fault path),
        which must not fail because a watcher did."""
        self.events.append(event)
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", listener, event.kind)

    def subscribe(self, listener: Callable[[Event], object]) -> None:
        if not callable(listener):
            raise ConfigError(f"an event subscriber must be callable, not {listener!r}")
        self._listeners.append(listener)

    def unsubscribe(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


@dataclass(frozen=True, slots=True)
class IpcRecord:
    time: float
    op: str
    pid: int
    domain: str
    object: str
    label: str
    badge: int
    body_bytes: int
    caps: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A traced message (or reply) arriving in a domain; ``flow`` names the send or reply
    record it came from, so an exporter can draw the message as an arrow."""

    time: float
    pid: int
    domain: str
    label: str
    flow: int


class IpcTrace:
    """A ring buffer of IPC records, off by default.

    ``records`` holds what senders and repliers did (send, call, nbsend, reply);
    ``flows[i]`` is the flow id of ``records[i]`` and ``deliveries`` the matching arrivals,
    so a message can be followed from one domain to the other.  Times are seconds since
    boot.  Every buffer keeps only the newest ``capacity`` entries.
    """

    def __init__(self, capacity: int = 10_000, enabled: bool = False) -> None:
        self.enabled = enabled
        self.records: deque[IpcRecord] = deque(maxlen=capacity)
        self.flows: deque[int] = deque(maxlen=capacity)
        self.deliveries: deque[Delivery] = deque(maxlen=capacity)
        self._flow = 0

    def new_flow(self) -> int:
        """A fresh flow id (never 0: 0 means "not traced")."""
        self._flow += 1
        return self._flow

    def add(self, record: IpcRecord, flow: int = 0) -> None:
        self.records.append(record)
        self.flows.append(flow)

    def delivered(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def clear(self) -> None:
        self.records.clear()
        self.flows.clear()
        self.deliveries.clear()

    def as_json(self, records: Iterable[IpcRecord] | None = None) -> str:
        return json.dumps([asdict(r) for r in (self.records if records is None else records)])

    def write_json(self, out: TextIO) -> None:
        out.write(self.as_json())


#: The page events the fault path records.  ``fault``: a process touched a non-present
#: page (the trap); ``zero-fill`` / ``page-in``: how that fault ended (with ``duration``,
#: the time from the trap to the mapping); ``fault-error``: it ended in a typed fault;
#: ``eviction``: a page's frame was freed after its sealed copy was stored (or it was
#: clean); ``discard``: the pager was told to forget an unmapped page.
PAGE_EVENTS = ("fault", "zero-fill", "page-in", "fault-error", "eviction", "discard")


@dataclass(frozen=True, slots=True)
class PageRecord:
    """One page event: what happened to which page of which domain, when (seconds since
    boot) and how long it took (0 for an instant).  ``handle`` is the opaque name the
    pager knows the page by (0 before the page was first mapped)."""

    time: float
    kind: str
    pid: int
    vpn: int
    handle: int
    duration: float = 0.0
    detail: str = ""


class PageTrace:
    """A ring buffer of page events, off by default.

    The fault path tests :attr:`enabled` once before building a record, so a kernel that
    does not trace pays one boolean test per event; when on, only the newest
    ``capacity`` records are kept (memory stays bounded on any run length).
    """

    def __init__(self, capacity: int = 50_000, enabled: bool = False,
                 epoch: float = 0.0, clock: Callable[[], float] = trio.current_time) -> None:
        self.enabled = enabled
        self.epoch = epoch  # the clock's time at boot
        self._clock = clock
        self.records: deque[PageRecord] = deque(maxlen=capacity)
        self.dropped = 0  # records pushed out of the ring
        #: address-space id -> pid of the domain it currently belongs to (asids are
        #: reused, so a record resolves its owner when it is made)
        self.owners: dict[int, int] = {}

    def now(self) -> float:
        """Seconds since boot on the kernel's (Trio) clock."""
        return self._clock() - self.epoch

    def page(self, kind: str, asid: int, vpn: int, handle: int, started: float | None = None,
             detail: str = "") -> float:
        """Record ``kind`` for page ``vpn`` of address space ``asid``; ``started`` (a
        :meth:`now` reading) makes it a span that ends now.  Returns the record's time."""
        now = self.now()
        duration = 0.0 if started is None else now - started
        if started is not None:
            now = started
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        self.records.append(PageRecord(now, kind, self.owners.get(asid, -1), vpn, handle,
                                       duration, detail))
        return now

    def clear(self) -> None:
        self.records.clear()
        self.dropped = 0

    def of_kind(self, kind: str) -> list[PageRecord]:
        return [r for r in self.records if r.kind == kind]
