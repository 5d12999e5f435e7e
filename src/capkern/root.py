"""The root task: boot a kernel and wire the system servers (seL4's root task).

``async with boot(...) as kernel`` starts the kernel inside the caller's Trio run: one
nursery owns every domain's task (processes and servers alike) and the kernel's own
tasks, so leaving the block cancels and joins everything -- no task is left behind.
With paging on, the root task starts the sealer, block device and pager domains and the
fault path before the body runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from . import insecure
from .config import BootConfig
from .errors import ConfigError
from .kernel import Kernel

__all__ = ["boot"]


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
        from .mmu.vm import check_paging_config

        check_paging_config(cfg)
    serial = insecure.boot_started(cfg)  # warns (InsecureWarning) if insecure
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(cfg, nursery)
            try:
                if cfg.paging:
                    from .mmu.vm import start_paging

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
