"""The trusted core: object table, domains and their CSpaces, spawn/kill, supervision.

``async with boot(...) as kernel`` starts the kernel inside the caller's Trio run: one
nursery owns every domain's task (processes and servers alike) and the kernel's own
tasks, so leaving the block cancels and joins everything -- no task is left behind.

The kernel owns a *root* CSpace (the initial domain, as in seL4's root task): library
code that boots a kernel builds the system from it -- creates endpoints, mints and
revokes capabilities, and hands them to the domains it spawns.  Root capabilities are
named by :class:`RootCap` (a slot index), never by object reference.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, overload

import trio

from . import insecure, wire
from .contract import Contract
from .cspace import Cap, CapInfo, CSpace, Rights
from .domain import Domain, DomainInfo, ExitStatus
from .errors import ConfigError, CSpaceFull, KernelShutdown, NoSuchProcess, QuotaExceeded
from .ipc import Endpoint, Notification, ReplyObject
from .nbdaddr import is_nbd_spec, parse_nbd_spec
from .proc import (
    Process,
    ProcessExit,
    check_name,
    check_object_args,
    check_program,
    revoke,
)
from .quota import Quota
from .trace import Counters, Event, EventLog, IpcTrace, PageTrace

if TYPE_CHECKING:
    from .mmu.vm import VM

__all__ = ["BootConfig", "Grant", "Kernel", "Program", "RootCap", "boot"]

log = logging.getLogger("capkern.kernel")

Program = Callable[..., Awaitable[Any]]
"""A program: ``async def main(proc: Process, *args) -> int | None``."""


@dataclass(frozen=True, slots=True)
class RootCap:
    """A capability held by the root (the code that booted the kernel), by slot."""

    slot: int
    label: str

    def __repr__(self) -> str:
        return f"<RootCap slot={self.slot} {self.label}>"


@dataclass(frozen=True, slots=True)
class Grant:
    """Give a spawned domain a capability derived from ``cap`` with these rights/badge."""

    cap: RootCap
    rights: str | Rights = Rights.ALL
    badge: int | None = None


@dataclass(frozen=True)
class BootConfig:
    """Boot options.  The defaults are the embedded configuration (demo and REPL).

    ``evict_batch`` pages are evicted per eviction (default 8): faster, but the fault
    counts differ from textbook one-page replacement (``capkern sim`` uses 1); a batch
    larger than RAM evicts every resident page (warned about when given explicitly).
    ``seed`` makes page handles, and so every policy choice, reproducible; ``precise``
    reports every reference to the pager in order (exact LRU/LFU; see ``mmu/reflog.py``).
    """

    ram_pages: int = 256
    policy: str = "clock"
    blockdev: str = "memory"
    swap_blocks: int = 8192
    blockdev_latency: float = 0.0
    cipher: str = "aes-256-gcm"
    pager: Program | None = None
    blockdev_server: Program | None = None
    pager_deadline: float = 2.0
    crypt_deadline: float = 5.0
    evict_batch: int = 8
    readahead: int = 0  # swapped pages fetched with a sequential page-in (0: off)
    limits: wire.Limits = field(default_factory=wire.Limits)
    cspace_size: int = 4096
    trace: bool = False
    paging: bool = True
    quota: Quota = field(default_factory=Quota)  # each spawned domain's default quota
    seed: int | None = None  # derive page handles from it: reproducible runs (see reflog)
    precise: bool = False  # report every reference, in order, to the pager (exact LRU/LFU)

    def validate(self) -> None:
        """Refuse a bad option with a :class:`ConfigError` before anything starts."""

        def count(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if type(value) is not int or value < minimum:
                raise ConfigError(f"{name} must be an int >= {minimum}, not {value!r}")

        def seconds(name: str, positive: bool) -> None:
            value = getattr(self, name)
            ok = (
                type(value) in (int, float)
                and math.isfinite(value)
                and (value > 0 if positive else value >= 0)
            )
            if not ok:
                what = "a positive" if positive else "a non-negative"
                raise ConfigError(f"{name} must be {what} finite number, not {value!r}")

        count("ram_pages", 1)
        count("evict_batch", 1)
        count("readahead", 0)
        count("swap_blocks", 2)
        count("cspace_size", 1)
        seconds("pager_deadline", True)
        seconds("crypt_deadline", True)
        seconds("blockdev_latency", False)
        if self.seed is not None and type(self.seed) is not int:
            raise ConfigError(f"seed must be an int or None, not {self.seed!r}")
        if type(self.precise) is not bool:
            raise ConfigError(f"precise must be a bool, not {self.precise!r}")
        if self.paging and self.evict_batch > self.ram_pages \
                and self.evict_batch != BootConfig.evict_batch:
            # (the default batch of 8 on a tiny RAM is documented, not warned about)
            warnings.warn(f"evict_batch={self.evict_batch} exceeds ram_pages="
                          f"{self.ram_pages}: each eviction empties RAM", stacklevel=4)
        if not isinstance(self.policy, str):
            raise ConfigError(f"policy must be a str, not {self.policy!r}")
        if self.cipher not in ("aes-256-gcm", "chacha20-poly1305", "null"):
            raise ConfigError(f"unknown cipher {self.cipher!r}")
        if not isinstance(self.quota, Quota):
            raise ConfigError(f"quota must be a capkern Quota, not {self.quota!r}")
        if not isinstance(self.limits, wire.Limits):
            raise ConfigError(f"limits must be a capkern.wire.Limits, not {self.limits!r}")
        for name in ("pager", "blockdev_server"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be a program (async function), not {value!r}")
        if self.blockdev_server is None and is_nbd_spec(self.blockdev):
            parse_nbd_spec(self.blockdev)  # a malformed address is a ConfigError now
        elif self.blockdev_server is None and not (
            isinstance(self.blockdev, str)
            and (self.blockdev == "memory" or (self.blockdev.startswith("file:")
                                               and self.blockdev[5:]))
        ):
            raise ConfigError(f"blockdev must be 'memory', 'file:PATH' or "
                              f"'nbd://HOST:PORT[/EXPORT]', not {self.blockdev!r}")
        if self.paging and self.blockdev_server is None and self.blockdev.startswith("file:"):
            _check_swap_path(self.blockdev[5:])


def _check_swap_path(path: str) -> None:
    """The default block device will create (or overwrite) a swap file at ``path``: refuse
    at boot a path where it cannot, rather than let the device die once domains run."""
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"swap file {path!r} is a directory")
    if not os.path.isdir(where):
        raise ConfigError(f"swap file {path!r}: directory {where!r} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"swap file {path!r} is not readable and writable")
    elif not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"swap file {path!r}: cannot create files in {where!r}")


class Kernel:
    """A booted capkern kernel.  Create with :func:`boot`."""

    def __init__(self, config: BootConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.limits = config.limits
        self.boot_time = trio.current_time()  # records and events: seconds since boot
        self.stats = Counters()
        self.events = EventLog()
        self.trace = IpcTrace(enabled=config.trace)
        self.page_trace = PageTrace(enabled=config.trace, epoch=self.boot_time)
        self._nursery = nursery
        self._pids = itertools.count(1)
        self._domains: dict[int, Domain] = {}
        self._closing = False
        self.root = Domain(self, 0, "root", "kernel", config.cspace_size, Quota.unlimited())
        self.root.state = "running"
        self._domains[0] = self.root
        self.vm: VM | None = None  # the paging subsystem, when enabled
        #: why this kernel gives up a security property (empty: it does not)
        self.insecure: tuple[str, ...] = insecure.reasons(config)

    def __repr__(self) -> str:
        """One line a REPL user can read: uptime, domains, free frames, policy, faults."""
        cfg = self.config
        doms = [d for d in self._domains.values() if d.pid]
        running = sum(1 for d in doms if d.alive)
        try:
            up = f"up {trio.current_time() - self.boot_time:.1f}s"
        except RuntimeError:
            up = "not running"
        if self._closing:
            up = "shut down"
        parts = [up, f"{running} of {len(doms)} domains live"]
        if self.vm is not None:
            pager = cfg.policy if cfg.pager is None else "custom pager"
            parts += [f"{self.vm.frames.free_count}/{cfg.ram_pages} frames free", pager,
                      f"{self.stats.faults} faults"]
        else:
            parts.append("paging off")
        if self.insecure:
            parts.append(f"INSECURE ({'; '.join(self.insecure)})")
        return f"<Kernel {', '.join(parts)}>"

    # -- events ------------------------------------------------------------------------

    def event(self, kind: str, dom: Domain, detail: str = "") -> None:
        """Record a kernel event (crash, kill, integrity fault...) and log it."""
        try:
            now = trio.current_time() - self.boot_time
        except RuntimeError:
            now = 0.0
        self.events.add(Event(now, kind, dom.pid, dom.name, detail))
        log.info("%s pid=%d %s %s", kind, dom.pid, dom.name, detail)

    # -- root capabilities -----------------------------------------------------------------

    def _root_cap(self, slot: int) -> RootCap:
        cap = self.root.cspace.lookup(slot)
        return RootCap(
            slot,
            f"{cap.obj.label()} [{cap.rights.short()}]"
            + (f" badge={cap.badge}" if cap.badge else ""),
        )

    @staticmethod
    def _root_slot(cap: RootCap) -> int:
        if not isinstance(cap, RootCap):
            raise ConfigError(f"expected a RootCap, not {cap!r}")
        return cap.slot

    def new_endpoint(self, name: str = "", contract: Contract | None = None) -> RootCap:
        """Create an endpoint; the root holds the original capability (rwg)."""
        check_object_args(name, contract)
        root = self.root
        return self._root_cap(
            root.cspace.insert_original(Endpoint(name, contract), Rights.ALL, "", root.usage)
        )

    def new_notification(self, name: str = "") -> RootCap:
        check_object_args(name, None)
        root = self.root
        return self._root_cap(
            root.cspace.insert_original(Notification(name), Rights.ALL, "", root.usage))

    def mint(self, cap: RootCap, rights: str | Rights, badge: int | None = None) -> RootCap:
        """Derive a root-held capability with fewer rights and/or a badge."""
        src = self.root.cspace.lookup(self._root_slot(cap))
        return self._root_cap(self.root.cspace.insert_derived(src, Rights.parse(rights), badge))

    async def revoke(self, cap: RootCap) -> int:
        """Remove every capability derived from ``cap``, in every domain (preemptible:
        see :func:`capkern.proc.revoke`); IPC blocked on any of them is cancelled."""
        return await revoke(self.root.cspace.lookup(self._root_slot(cap)))

    def delete(self, cap: RootCap) -> None:
        self.root.cspace.delete(self._root_slot(cap))

    # -- processes -----------------------------------------------------------------------

    def spawn(
        self,
        program: Program,
        *args: Any,
        name: str | None = None,
        caps: Mapping[str, RootCap | Grant] | None = None,
        kind: str = "process",
        quota: Quota | dict[str, int] | None = None,
    ) -> int:
        """Start ``program(proc, *args)`` in a new protection domain; returns its pid.

        ``args`` cross into the new domain as msgpack (fresh copies, no shared objects);
        ``caps`` places capabilities derived from root capabilities in named slots;
        ``quota`` (a :class:`Quota`, or a dict overriding fields of the boot default)
        bounds what the domain may make the kernel hold.
        Everything is checked before anything changes: a refused spawn leaves no trace.
        """
        if self._closing:
            raise KernelShutdown("the kernel is shutting down")
        if not callable(program):
            raise ConfigError(f"program must be an async function, not {program!r}")
        if kind not in ("process", "server"):
            raise ConfigError(f"kind must be 'process' or 'server', not {kind!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str, not {name!r}")
        dom_quota = Quota.coerce(quota, self.config.quota)
        dom_name = name or str(getattr(program, "__name__", "process"))
        fresh_args = wire.decode(wire.encode(list(args), self.limits))
        check_program(program, fresh_args)
        plan = self._plan_grants(caps)
        if len(plan) > self.config.cspace_size - 1:  # slot 0 is the null slot
            raise CSpaceFull(f"{len(plan)} capabilities do not fit a CSpace of "
                             f"{self.config.cspace_size} slots")
        if len(plan) > dom_quota.slots:
            raise QuotaExceeded("slots", dom_quota.slots, 0, len(plan), dom_name)
        self.root.usage.check("spawns")  # the root pays for the domains it spawns
        pid = next(self._pids)
        dom = Domain(self, pid, dom_name, kind, self.config.cspace_size, dom_quota)
        for slot_name, src, rights, badge in plan:
            dom.cspace.insert_derived(src, rights, badge, slot_name)
        dom.program = program
        if self.vm is not None and kind == "process":
            self.vm.attach(dom)
        self._domains[pid] = dom
        self.root.usage.charge("spawns")
        self.stats.spawns += 1
        self._nursery.start_soon(
            self._run_domain, dom, program, fresh_args, name=f"capkern:{dom_name}"
        )
        self.event("spawn", dom, kind)
        return pid

    def _plan_grants(
        self, caps: Mapping[str, RootCap | Grant] | None
    ) -> list[tuple[str, Cap, Rights, int]]:
        """Decode phase of spawn's ``caps``: every check, no mutation."""
        if caps is None:
            return []
        if not isinstance(caps, Mapping):
            raise ConfigError(f"caps must be a mapping of slot name -> RootCap/Grant, "
                              f"not {type(caps).__name__}")
        plan = []
        for slot_name, g in caps.items():
            check_name(slot_name, "slot name")
            if not slot_name:
                raise ConfigError("a granted capability needs a non-empty slot name")
            grant = g if isinstance(g, Grant) else Grant(g)
            src = self.root.cspace.lookup(self._root_slot(grant.cap))
            rights, badge = CSpace.check_derivation(src, Rights.parse(grant.rights), grant.badge)
            plan.append((slot_name, src, rights, badge))
        return plan

    async def _run_domain(self, dom: Domain, program: Program, args: list[Any]) -> None:
        """A domain's task: run the program, turn its end into an exit status.

        Whatever the program raises -- an exception, ``sys.exit``, any other
        ``BaseException``, an exception group from its own nursery -- ends this domain
        only.  Two things pass through: the kernel's own cancellation, and
        ``KeyboardInterrupt`` -- Trio delivers the user's Ctrl-C to whichever task is
        running, and it must end the run, not one unlucky domain.
        """
        status: ExitStatus | None = None
        try:
            with dom.cancel_scope:
                dom.state = "running"
                # killed before it ever ran: it does not run at all
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    rv = await program(Process(dom), *args)
                    code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
                    status = self._exited(dom, code)
                except BaseException as exc:
                    status = self._ended_by(dom, exc)
                    if status is None:
                        raise  # a cancellation: the cancel scope (or the kernel's) takes it
            if status is None or (status.state == "exited" and dom.cancel_scope.cancel_called):
                # killed -- even if the program swallowed the cancellation and returned
                status = ExitStatus(dom.pid, dom.name, "killed")
        finally:
            if status is None or (status.state == "exited" and self._closing):
                status = ExitStatus(dom.pid, dom.name, "killed", error="kernel shutdown")
            self._teardown(dom, status)

    @staticmethod
    def _exited(dom: Domain, code: Any) -> ExitStatus:
        """An exit status from an exit code (a plain int; anything else is a failure)."""
        if code is None:
            code = 0
        elif isinstance(code, bool):
            code = int(code)
        if type(code) is not int:
            if isinstance(code, int):
                code = int.__int__(code)  # an int subclass: keep only its value
            else:
                return ExitStatus(dom.pid, dom.name, "exited", 1, str(code)[:200])
        if not -(1 << 63) <= code < (1 << 63):
            return ExitStatus(dom.pid, dom.name, "exited", 1, "exit code out of range")
        return ExitStatus(dom.pid, dom.name, "exited", code)

    def _ended_by(self, dom: Domain, exc: BaseException) -> ExitStatus | None:
        """The exit status for what a program raised; None if it must pass through."""
        if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
            return None
        if isinstance(exc, BaseExceptionGroup):
            rest = exc.split(trio.Cancelled)[1]
            if rest is None or rest.subgroup(KeyboardInterrupt) is not None:
                return None
            exits, errors = rest.split((ProcessExit, SystemExit))
            if errors is not None or exits is None:
                return self._crashed(dom, rest)
            exc = _leaves(exits)[0]
        if isinstance(exc, ProcessExit):
            return self._exited(dom, exc.code)
        if isinstance(exc, SystemExit):
            return self._exited(dom, exc.code)
        return self._crashed(dom, exc)

    def _crashed(self, dom: Domain, exc: BaseException) -> ExitStatus:
        self.stats.crashes += 1
        if isinstance(exc, BaseExceptionGroup):
            summary = "; ".join(_summary(leaf) for leaf in _leaves(exc))
        else:
            summary = _summary(exc)
        self.event("crash", dom, summary)
        return ExitStatus(dom.pid, dom.name, "failed", None, summary)

    def _teardown(self, dom: Domain, status: ExitStatus) -> None:
        """Free everything a dead domain held; wake whoever waits on it."""
        dom.exit = status
        dom.state = status.state
        if status.state != "failed":
            self.stats.exits += 1
        reply = dom.take_reply()
        if reply is not None:
            reply.abort(f"server {dom.name!r} (pid {dom.pid}) ended without replying")
        for cap in dom.cspace.clear_all(f"domain {dom.name!r} ended"):
            if isinstance(cap.obj, ReplyObject):
                cap.obj.abort(f"server {dom.name!r} (pid {dom.pid}) ended without replying")
        if self.vm is not None and dom.aspace is not None:
            self.vm.detach(dom)
        self.root.usage.release("spawns")
        dom.done.set()
        if status.state != "killed" or status.error != "kernel shutdown":
            self.event("exit", dom, f"{status.state} code={status.code}")

    def _domain(self, pid: int) -> Domain:
        if type(pid) is not int:
            hint = " (kernel.pid_of(name) finds a live domain by name)" \
                if isinstance(pid, str) else ""
            raise NoSuchProcess(f"no domain with pid {pid!r}: a pid is an int{hint}")
        dom = self._domains.get(pid)
        if dom is None or pid == 0:
            raise NoSuchProcess(f"no domain with pid {pid!r}")
        return dom

    def kill(self, pid: int) -> None:
        """Cancel a domain's program; its resources are freed as it unwinds."""
        dom = self._domain(pid)
        if dom.alive and not dom.cancel_scope.cancel_called:
            self.stats.kills += 1
            self.event("kill", dom)
            dom.cancel_scope.cancel()

    async def wait(self, pid: int) -> ExitStatus:
        """Wait until the domain has ended; returns its exit status."""
        dom = self._domain(pid)
        await dom.done.wait()
        assert dom.exit is not None
        return dom.exit

    def status(self, pid: int) -> ExitStatus | None:
        """The exit status, or None while the domain runs."""
        return self._domain(pid).exit

    def reap(self, pid: int) -> ExitStatus:
        """Forget an ended domain (its status is returned)."""
        dom = self._domain(pid)
        if dom.exit is None:
            raise NoSuchProcess(f"pid {pid} is still running")
        del self._domains[pid]
        return dom.exit

    # -- introspection ----------------------------------------------------------------------

    def domains(self) -> list[DomainInfo]:
        """Every recorded domain (live and ended, until reaped)."""
        out = []
        for dom in self._domains.values():
            if dom.pid == 0:
                continue
            resident = swapped = 0
            if dom.aspace is not None:
                resident, swapped = dom.aspace.resident_count(), dom.aspace.swapped_count()
            out.append(
                DomainInfo(
                    dom.pid,
                    dom.name,
                    dom.kind,
                    dom.state,
                    len(dom.cspace),
                    resident,
                    swapped,
                    dom.faults,
                    dom.integrity_faults,
                    dom.exit,
                    dom.usage.as_dict(),
                )
            )
        return out

    def pid_of(self, name: str) -> int:
        for dom in self._domains.values():
            if dom.name == name and dom.alive and dom.pid:
                return dom.pid
        raise NoSuchProcess(f"no live domain named {name!r}")

    def capabilities(self, pid: int) -> list[CapInfo]:
        """A domain's capabilities (pid 0 is the root)."""
        dom = self.root if pid == 0 else self._domain(pid)
        return dom.cspace.info()

    @overload
    def dump(self, format: Literal["json"] = "json") -> dict[str, Any]: ...
    @overload
    def dump(self, format: Literal["capdl", "dot"]) -> str: ...

    def dump(self, format: str = "json") -> dict[str, Any] | str:
        """A picture of the system (see :mod:`capkern.sysdump`).

        ``json`` (the default): JSON-serialisable data -- domains (with their exit status
        and pending implicit reply), objects, caps and the derivation tree (each cap
        names its parent as ``[pid, slot]``).  ``capdl``: capDL-style text with object
        names.  ``dot``: a Graphviz digraph of the capability derivation tree.
        """
        from . import sysdump

        data = sysdump.snapshot(self)
        return data if format == "json" else sysdump.render(data, format)

    def export_trace(self, path: str | os.PathLike[str]) -> int:
        """Write the page events and IPC trace as Chrome/Perfetto trace-event JSON (open
        it at ui.perfetto.dev): one track per domain, IPC messages as flow arrows.
        Returns the number of trace events written.  Recording is on with
        ``boot(trace=True)`` (or ``kernel.trace.enabled = kernel.page_trace.enabled =
        True``)."""
        from .trace_export import chrome_trace, write_trace

        names = {dom.pid: (dom.name, dom.kind) for dom in self._domains.values()}
        doc = chrome_trace(self.trace, self.page_trace, names)
        write_trace(doc, path)
        return len(doc["traceEvents"])

    # -- lifecycle ---------------------------------------------------------------------------

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        """Run a kernel-owned task in the kernel's nursery."""
        self._nursery.start_soon(fn, *args, name=name)

    async def _shutdown(self) -> None:
        self._closing = True
        self._nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _summary(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


@asynccontextmanager
async def boot(config: BootConfig | None = None, **options: Any) -> AsyncIterator[Kernel]:
    """Boot a kernel inside the current Trio run; shut it down on exit.

    Keyword options override :class:`BootConfig` fields (``ram_pages``, ``policy``,
    ``blockdev``, ``cipher``, ``pager``, ``trace``...).
    """
    try:
        cfg = replace(config or BootConfig(), **options)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    cfg.validate()
    if cfg.paging:
        from .mmu.startup import check_paging_config

        check_paging_config(cfg)
    serial = insecure.boot_started(cfg)  # warns (InsecureWarning) if insecure
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(cfg, nursery)
            try:
                if cfg.paging:
                    from .mmu.startup import start_paging

                    await start_paging(kernel)
                yield kernel
            finally:
                await kernel._shutdown()
    except BaseExceptionGroup as group:
        # the nursery wraps whatever ended the block (the body's own exception, an error
        # starting the servers): a single one goes back to the caller as itself, so
        # ``except KeyError`` / ``pytest.raises`` around the boot block work as written
        if len(group.exceptions) != 1:
            raise
        leaf = group.exceptions[0]
        context = leaf.__context__
        try:
            raise leaf
        finally:
            leaf.__context__ = context
    finally:
        insecure.boot_ended(serial)
