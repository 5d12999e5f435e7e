"""Starting the paging system: the sealer, block device and pager domains (trusted).

Boot wiring, not paging: it creates the three server endpoints in the root CSpace,
spawns the servers with capabilities to them, and gives the fault path a
:class:`~capkern.mmu.ports.IpcPort` for the pager and one for the sealer.  (The root
task is where this belongs; it lives here until there is one.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..cspace import Rights
from ..errors import ConfigError
from ..ipc import Endpoint
from ..protocols import BLOCKDEV, CRYPT, PAGER
from .ports import IpcPort
from .vm import VM, VMConfig

if TYPE_CHECKING:
    from ..domain import Domain
    from ..kernel import BootConfig, Kernel

__all__ = ["check_paging_config", "start_paging"]


def check_paging_config(cfg: BootConfig) -> None:
    """Boot-time checks of the paging options, before any task starts (raise ConfigError)."""
    if cfg.pager is None:
        _default_pager(cfg.policy)


async def start_paging(kernel: Kernel) -> None:
    """Start the sealer, block device and pager domains and the kernel's fault path."""
    from ..kernel import Grant
    from ..servers.crypt.server import crypt_server  # trusted: part of the TCB

    cfg = kernel.config
    boot_id = os.urandom(16)
    root = kernel.root.cspace
    slots = {}
    for name, contract in (("crypt", CRYPT), ("blockdev", BLOCKDEV), ("pager", PAGER)):
        slots[name] = root.insert_original(Endpoint(name, contract), Rights.ALL)
    grant = kernel._root_cap
    kernel.spawn(crypt_server, cfg.cipher, boot_id, name="crypt", kind="server",
                 caps={"service": Grant(grant(slots["crypt"]), Rights.READ)})
    blockdev = cfg.blockdev_server or _default_blockdev()
    kernel.spawn(blockdev, cfg.blockdev, cfg.swap_blocks, cfg.blockdev_latency,
                 name="blockdev", kind="server",
                 caps={"service": Grant(grant(slots["blockdev"]), Rights.READ)})
    pager = cfg.pager or _default_pager(cfg.policy)
    kernel.spawn(pager, cfg.policy, name="pager", kind="server",
                 caps={"service": Grant(grant(slots["pager"]), Rights.READ),
                       "blockdev": Grant(grant(slots["blockdev"]), Rights.WRITE)})
    def event(kind: str, dom: Domain | None, detail: str) -> None:
        kernel.event(kind, kernel.root if dom is None else dom, detail)

    # the kernel calls its servers through write-only capabilities: no operation of
    # theirs declares capabilities in its reply (Op.reply_caps), so a reply carrying
    # any is refused, counted as an attack, and can never fill the root CSpace
    calls = {name: root.lookup(root.insert_derived(root.lookup(slots[name]), Rights.WRITE, None))
             for name in ("pager", "crypt")}
    vm_config = VMConfig(cfg.ram_pages, cfg.evict_batch, cfg.pager_deadline, cfg.crypt_deadline,
                         cfg.readahead, cfg.seed, cfg.precise, boot_id)
    vm = VM(vm_config, kernel.stats, event, IpcPort(kernel.root, calls["pager"]),
            IpcPort(kernel.root, calls["crypt"]), kernel.page_trace)
    kernel.vm = vm
    kernel.start_soon(vm.run, name="capkern:fault-path")


def _default_pager(policy: str) -> Any:
    # The kernel only *starts* the default pager program as an untrusted domain; it
    # never calls into it except over its endpoint.  Imported lazily by name so the
    # TCB modules carry no import of untrusted server code.  The one thing it asks of
    # the module is at boot, before any domain runs: whether the boot option ``policy``
    # names one of its policies, so a typo is a ConfigError from boot() rather than a
    # pager that dies at start and processes that later run out of frames.
    import importlib

    module = importlib.import_module("capkern.servers.pager.server")
    if policy not in module.POLICIES:
        raise ConfigError(
            f"unknown replacement policy {policy!r}; the default pager offers "
            f"{', '.join(module.POLICIES)}"
        )
    return module.pager_server


def _default_blockdev() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.blockdev.server").blockdev_server
