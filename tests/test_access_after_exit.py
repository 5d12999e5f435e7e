"""An access through a process's handle after the process ended is refused as such.

``Process.read``/``write`` check their arguments when called and hand back the VM's
coroutine; one made while the process ran and awaited after it ended (its memory
released, its address-space id free for the next process) gets the same typed error as
a call made after the end -- :class:`~capkern.errors.ProcessError`, not a misleading
segmentation fault -- and touches nothing, the memory of the process now running
included."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest
import trio

import capkern
from capkern._pagefmt import PAGE_SIZE
from capkern.errors import ProcessError


@pytest.mark.parametrize("ram_pages", [2, 8], ids=["evicting", "resident"])
async def test_an_access_awaited_after_the_end_is_a_process_error(ram_pages: int) -> None:
    kept: list[tuple[capkern.Process, int, list[Coroutine[Any, Any, Any]]]] = []
    victim_read: list[bytes] = []

    async def ended(proc: capkern.Process) -> None:
        addr = proc.mmap(4 * PAGE_SIZE)
        for p in range(4):
            await proc.write(addr + p * PAGE_SIZE, b"ended!!!")
        kept.append((proc, addr, [proc.read(addr, 8), proc.write(addr, b"overwrit"),
                                  proc.read(addr, 2 * PAGE_SIZE),
                                  proc.write(addr + PAGE_SIZE - 4, b"overwrit")]))

    async def running(proc: capkern.Process) -> None:
        addr = proc.mmap(PAGE_SIZE)
        await proc.write(addr, b"running!")
        await trio.sleep(1)
        victim_read.append(await proc.read(addr, 8))

    async with capkern.boot(ram_pages=ram_pages) as k:
        await k.wait(k.spawn(ended))
        pid = k.spawn(running)
        await trio.sleep(0.1)  # it runs, in the address space id the ended one had
        proc, addr, stale = kept[0]
        for coro in stale:
            with pytest.raises(ProcessError):
                await coro
        with pytest.raises(ProcessError):
            _ = proc.read(addr, 8)  # refused at the call
        assert (await k.wait(pid)).ok
    assert victim_read == [b"running!"]
