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
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

import trio

from . import _exits as exits
from . import _insecure as insecure
from . import _wire as wire
from ._config import BootConfig, Grant, Program, RootCap
from ._contract import Contract
from ._cspace import Cap, CapInfo, CSpace, Rights
from ._domain import Domain, DomainInfo, ExitStatus
from ._ipc import Endpoint, ReplyObject
from ._notify import Notification
from ._proc import (
    Process,
    check_name,
    check_object_args,
    check_program,
    revoke,
)
from ._quota import Quota
from ._states import DomainState, move
from ._trace import Counters, Event, EventLog, IpcTrace, PageTrace
from .errors import ConfigError, CSpaceFull, KernelShutdown, NoSuchProcess, QuotaExceeded

if TYPE_CHECKING:
    from .mmu._vm import VM

__all__ = ["Kernel"]

log = logging.getLogger("capkern.kernel")



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
        self.root.state = DomainState.RUNNING
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
        see :func:`capkern._proc.revoke`); IPC blocked on any of them is cancelled."""
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
                dom.state = move(dom.state, DomainState.RUNNING)
                # killed before it ever ran: it does not run at all
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    rv = await program(Process(dom), *args)
                    code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
                    status = exits.exited(dom.pid, dom.name, code)
                except BaseException as exc:
                    status = self._ended_by(dom, exc)
                    if status is None:
                        raise  # a cancellation: the cancel scope (or the kernel's) takes it
            if status is None or (status.state == "exited" and dom.cancel_scope.cancel_called):
                # killed -- even if the program swallowed the cancellation and returned
                status = ExitStatus(dom.pid, dom.name, DomainState.KILLED)
        finally:
            if status is None or (status.state == "exited" and self._closing):
                status = ExitStatus(dom.pid, dom.name, DomainState.KILLED, error="kernel shutdown")
            self._teardown(dom, status)

    def _ended_by(self, dom: Domain, exc: BaseException) -> ExitStatus | None:
        """The exit status for what a program raised (a crash is counted and logged);
        None if it must pass through."""
        status = exits.ending(dom.pid, dom.name, exc)
        if status is not None and status.state == DomainState.FAILED:
            self.stats.crashes += 1
            self.event("crash", dom, status.error or "")
        return status

    def _teardown(self, dom: Domain, status: ExitStatus) -> None:
        """Free everything a dead domain held; wake whoever waits on it."""
        dom.exit = status
        dom.state = move(dom.state, DomainState(status.state))
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
                    dom.isolation,
                    dom.os_pid if dom.isolation != "task" else os.getpid(),
                    dom.restarts,
                    dom.frames_refused,
                    dom.quarantined,
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
        """A picture of the system (see :mod:`capkern._sysdump`).

        ``json`` (the default): JSON-serialisable data -- domains (with their exit status
        and pending implicit reply), objects, caps and the derivation tree (each cap
        names its parent as ``[pid, slot]``).  ``capdl``: capDL-style text with object
        names.  ``dot``: a Graphviz digraph of the capability derivation tree.
        """
        from . import _sysdump as sysdump

        data = sysdump.snapshot(self._domains.values(), self.stats)
        return data if format == "json" else sysdump.render(data, format)

    def export_trace(self, path: str | os.PathLike[str]) -> int:
        """Write the page events and IPC trace as Chrome/Perfetto trace-event JSON (open
        it at ui.perfetto.dev): one track per domain, IPC messages as flow arrows.
        Returns the number of trace events written.  Recording is on with
        ``boot(trace=True)`` (or ``kernel.trace.enabled = kernel.page_trace.enabled =
        True``)."""
        from ._trace_export import chrome_trace, write_trace

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

