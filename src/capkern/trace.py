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

from .errors import ConfigError

__all__ = ["Counters", "Event", "EventLog", "IpcRecord", "IpcTrace"]

log = logging.getLogger("capkern.events")


@dataclass
class Counters:
    """Kernel-wide counters (read them as ``kernel.stats``)."""

    ipc_sends: int = 0
    ipc_calls: int = 0
    ipc_replies: int = 0
    ipc_receives: int = 0
    caps_transferred: int = 0
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


class IpcTrace:
    """A ring buffer of IPC records, off by default."""

    def __init__(self, capacity: int = 10_000, enabled: bool = False) -> None:
        self.enabled = enabled
        self.records: deque[IpcRecord] = deque(maxlen=capacity)

    def add(self, record: IpcRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records.clear()

    def as_json(self, records: Iterable[IpcRecord] | None = None) -> str:
        return json.dumps([asdict(r) for r in (self.records if records is None else records)])

    def write_json(self, out: TextIO) -> None:
        out.write(self.as_json())
