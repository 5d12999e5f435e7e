"""The root task: boot a kernel and wire the system servers (seL4's root task).

``async with boot(...) as kernel`` starts the kernel inside the caller's Trio run: one
nursery owns every domain's task (processes and servers alike) and the kernel's own
tasks, so leaving the block cancels and joins everything -- no task is left behind.
With paging on, the root task creates the three server endpoints in the root CSpace,
spawns the sealer, block device and pager with capabilities to them (in child OS
processes with ``isolation="process"``, or a remote pager), and gives the fault path a
:class:`~capkern.mmu._ports.IpcPort` for the pager and one for the sealer.  The MMU only
pages; this module is the one place that knows which servers make up the system.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from . import _insecure as insecure
from ._config import BootConfig, Grant
from ._cspace import Rights
from ._ipc import Endpoint
from ._protocols import BLOCKDEV, CRYPT, PAGER
from .errors import CapkernError, ConfigError
from .kernel import Kernel
from .mmu._ports import IpcPort, ServerPort
from .mmu._vm import VM, VMConfig
from .mmu._watchdog import Watchdog
from .pagerset._port import PagerSetPort

if TYPE_CHECKING:
    from ._cspace import Cap
    from ._domain import Domain

__all__ = ["boot", "check_boot_options", "check_paging_config", "start_paging"]


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
        check_paging_config(cfg)
    serial = insecure.boot_started(cfg)  # warns (InsecureWarning) if insecure
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(cfg, nursery)
            try:
                if cfg.paging:
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


def check_boot_options(**options: Any) -> None:
    """Raise :class:`ConfigError` (with a message fit for a person) if ``boot(**options)``
    would be refused (boot's own checks, including whether a ``file:PATH`` swap file can
    be created), without booting anything."""
    try:
        cfg = replace(BootConfig(), **options)
        cfg.validate()
        if cfg.paging:
            check_paging_config(cfg)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad boot options: {exc}") from None


def check_paging_config(cfg: BootConfig) -> None:
    """Boot-time checks of the paging options, before any task starts (raise ConfigError)."""
    if cfg.pagers is not None:
        from .isolation._spec import parse_tcp

        for member in cfg.pagers:
            if isinstance(member, str):
                parse_tcp(member)
        _default_pager(cfg.policy)
    elif cfg.pager is None:
        _default_pager(cfg.policy)
    elif isinstance(cfg.pager, str):
        from .isolation._spec import parse_tcp

        parse_tcp(cfg.pager)  # a remote pager's address


async def start_paging(kernel: Kernel) -> None:
    """Start the sealer, block device and pager domains and the kernel's fault path."""
    from .servers.crypt import crypt_server  # trusted: part of the TCB

    cfg = kernel.config
    boot_id = os.urandom(16)
    root = kernel.root.cspace
    grant = kernel._root_cap
    crypt_slot = root.insert_original(Endpoint("crypt", CRYPT), Rights.ALL)
    watchdog = Watchdog()  # deadlines of the kernel's calls to its servers
    kernel.start_soon(watchdog.run, name="capkern:watchdog")
    kernel.spawn(crypt_server, cfg.cipher, boot_id, name="crypt", kind="server",
                 caps={"service": Grant(grant(crypt_slot), Rights.READ)})
    pager_port: ServerPort
    if cfg.pagers is None:
        pager_port = _start_pager(kernel, cfg.pager or _default_pager(cfg.policy), "", watchdog)
    else:
        pager_port = _start_pager_set(kernel, watchdog)

    def event(kind: str, dom: Domain | None, detail: str) -> None:
        kernel.event(kind, kernel.root if dom is None else dom, detail)

    crypt_port = IpcPort(kernel.root, _call_cap(kernel, crypt_slot), watchdog)
    vm_config = VMConfig(cfg.ram_pages, cfg.evict_batch, cfg.pager_deadline, cfg.crypt_deadline,
                         cfg.readahead, cfg.seed, cfg.precise, boot_id)
    vm = VM(vm_config, kernel.stats, event, pager_port, crypt_port, kernel.page_trace)
    kernel.vm = vm
    kernel.start_soon(vm.run, name="capkern:fault-path")


def _call_cap(kernel: Kernel, slot: int) -> Cap:
    # the kernel calls its servers through write-only capabilities: no operation of
    # theirs declares capabilities in its reply (Op.reply_caps), so a reply carrying
    # any is refused, counted as an attack, and can never fill the root CSpace
    root = kernel.root.cspace
    return root.lookup(root.insert_derived(root.lookup(slot), Rights.WRITE, None))


def _start_pager(kernel: Kernel, pager: Any, suffix: str, watchdog: Watchdog) -> IpcPort:
    """Spawn one pager (``pager`` + ``suffix``) and its own block device; its port."""
    cfg = kernel.config
    root = kernel.root.cspace
    grant = kernel._root_cap
    slots = {name: root.insert_original(Endpoint(name + suffix, contract), Rights.ALL)
             for name, contract in (("blockdev", BLOCKDEV), ("pager", PAGER))}
    blockdev = cfg.blockdev_server or _default_blockdev()
    if cfg.isolation == "process" or isinstance(pager, str):  # child processes / remote
        from .isolation._boot import isolate_servers

        pager, blockdev = isolate_servers(cfg, pager, blockdev)
    kernel.spawn(blockdev, cfg.blockdev, cfg.swap_blocks, cfg.blockdev_latency,
                 name="blockdev" + suffix, kind="server",
                 caps={"service": Grant(grant(slots["blockdev"]), Rights.READ)})
    kernel.spawn(pager, cfg.policy, name="pager" + suffix, kind="server",
                 caps={"service": Grant(grant(slots["pager"]), Rights.READ),
                       "blockdev": Grant(grant(slots["blockdev"]), Rights.WRITE)})
    return IpcPort(kernel.root, _call_cap(kernel, slots["pager"]), watchdog)


def _start_pager_set(kernel: Kernel, watchdog: Watchdog) -> PagerSetPort:
    """Spawn every pager of ``cfg.pagers`` (``pager0``, ``pager1``... each with its own
    block device ``blockdev0``...) behind one :class:`PagerSetPort`.  A quarantined
    member is an event on its domain and shows in ``ps()``."""
    cfg = kernel.config
    assert cfg.pagers is not None
    ports = [_start_pager(kernel, member, str(i), watchdog)
             for i, member in enumerate(cfg.pagers)]

    def quarantined(index: int, why: str) -> None:
        try:
            dom = kernel._domains[kernel.pid_of(f"pager{index}")]
        except CapkernError:
            dom = kernel.root
        dom.quarantined = True
        dom.integrity_faults += 1
        kernel.event("pager_quarantined", dom, why)

    return PagerSetPort(ports, mode=cfg.pager_set, copies=cfg.copies, needed=cfg.needed,
                        hedge=cfg.hedge_delay, on_quarantine=quarantined)


def _default_pager(policy: str) -> Any:
    # The kernel only *starts* the default pager program as an untrusted domain; it
    # never calls into it except over its endpoint.  Imported lazily by name so the
    # TCB modules carry no import of untrusted server code.  The one thing it asks of
    # the module is at boot, before any domain runs: whether the boot option ``policy``
    # names one of its policies, so a typo is a ConfigError from boot() rather than a
    # pager that dies at start and processes that later run out of frames.
    import importlib

    module = importlib.import_module("capkern.servers.pager")
    if policy not in module.POLICIES:
        raise ConfigError(
            f"unknown replacement policy {policy!r}; the default pager offers "
            f"{', '.join(module.POLICIES)}"
        )
    return module.pager_server


def _default_blockdev() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.blockdev").blockdev_server
