"""The batched access syscall: walk a list of page references in one trap (trusted).

A reference-string simulator makes one memory reference per page number; as separate
``read`` syscalls that costs a trap, a buffer and a checkpoint each.  ``access`` takes
the whole list in one trap and walks it through the **same** page tables and fault
path: every reference checks its page-table entry (mapping and rights), a non-present
page faults exactly as a ``read``/``write`` would (zero-fill or page-in through the
pager and sealer, eviction when RAM is full), a resident one sets the accessed bit (and
for a write stores one byte, setting the dirty bit).  In precise mode each reference is
logged for the pager; with ``future=True`` (oracle mode, offline simulation only) the
kernel also attaches each reference's next-use position -- see ``_reflog.py``.

It returns one byte per reference: 1 if it hit a resident page, 0 if it faulted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from .._pagefmt import PAGE_SIZE
from ..errors import ConfigError, SegmentationFault
from ._reflog import NEVER, fill_next_uses

if TYPE_CHECKING:
    from .._domain import Domain
    from ._vm import VM

__all__ = ["MAX_ACCESS", "access"]

MAX_ACCESS = 1 << 22  # references per trap
_CHECK_STEP = 1 << 14  # list entries checked (or scanned for next uses) between checkpoints


async def _next_uses(vpns: Sequence[int]) -> list[int]:
    """:func:`~.reflog.next_uses` in steps, with a checkpoint between them: no one step
    of a long oracle batch holds the kernel for long."""
    out = [NEVER] * len(vpns)
    seen: dict[object, int] = {}
    for hi in range(len(vpns), 0, -_CHECK_STEP):
        fill_next_uses(vpns, out, seen, max(0, hi - _CHECK_STEP), hi)
        await trio.lowlevel.checkpoint()
    return out
_YIELD_EVERY = 2048  # a long batch of hits still lets other tasks run


async def access(vm: VM, dom: Domain, addrs: Sequence[int], write: bool = False,
                 future: bool = False, count: int | None = None) -> bytes:
    """Reference the page of each address in ``addrs`` in order; return hit (1) / fault
    (0) bytes.

    With ``count``, only the first ``count`` pages are referenced; the rest of the list
    is the future the oracle may tell the pager about (one-reference-per-trap runs).

    Every argument is checked before any reference is made: a bad list is a
    :class:`ConfigError`, an unmapped or forbidden page a fault of that reference (the
    references before it have happened, as with a real access loop).
    """
    aspace = dom.aspace
    if aspace is None:
        raise SegmentationFault("no address space")
    if not isinstance(addrs, list | tuple) or len(addrs) > MAX_ACCESS:
        raise ConfigError(f"access takes a list of at most {MAX_ACCESS} addresses")
    vpns: list[int] = []
    for start in range(0, len(addrs), _CHECK_STEP):  # a long list is checked in steps
        for a in addrs[start:start + _CHECK_STEP]:
            if type(a) is not int or a < 0:
                raise ConfigError(f"addresses must be non-negative ints, not {a!r}")
            vpns.append(a // PAGE_SIZE)
        await trio.lowlevel.checkpoint()
    if type(write) is not bool or type(future) is not bool:
        raise ConfigError("write and future must be bools")
    walk = len(vpns) if count is None else count
    if type(walk) is not int or not 0 <= walk <= len(vpns):
        raise ConfigError(f"count must be an int in [0, {len(vpns)}], not {count!r}")
    log = vm.reflog
    if future and log is None:
        raise ConfigError("future=True needs a precise boot (boot(precise=True))")
    need = 2 if write else 1  # Rights.WRITE / Rights.READ
    nexts = await _next_uses(vpns) if future else None
    clock = 0
    if log is not None and nexts is not None:
        clock = log.clock
        log.clock += walk
    hits = bytearray(walk)
    pages = aspace.pages
    ram = vm.frames.ram
    touched, dirtied = vm.res.touched, vm.res.dirtied
    for i in range(walk):
        vpn = vpns[i]
        pte = pages.get(vpn)
        if pte is None or not pte.present:
            pte = vm._pte(aspace, vpn, need)  # the mapping and rights check (raises)
            while not pte.present:
                await vm.fault(dom, vpn)
                pte = vm._pte(aspace, vpn, need)
        else:
            if not pte.rights._value_ & need:
                vm._pte(aspace, vpn, need)  # raises the protection fault
            hits[i] = 1
        if not pte.accessed:  # the change logs the pager's report is built from
            pte.accessed = True
            touched.append(pte)
        if write:
            if not pte.dirty:
                pte.dirty = True
                dirtied.append(pte)
            ram[pte.frame * PAGE_SIZE] = i & 0xFF
        if log is not None:
            if nexts is None:
                log.note(pte.handle)
            else:
                nxt = nexts[i]
                log.note(pte.handle, nxt if nxt == NEVER else clock + nxt)
                log.oracle = True  # (a report since the batch began cleared it)
            if log.full:
                await vm.settle_refs()
        if not i % _YIELD_EVERY:
            await trio.lowlevel.checkpoint()
    await vm.settle_refs()
    return bytes(hits)

