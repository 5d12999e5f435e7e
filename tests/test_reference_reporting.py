"""What the pager hears of references, through the fault path's own code paths.

Every way a page can be referenced -- the resident fast path of ``read``/``write``, the
span path that faults, the batched ``access`` syscall -- must reach the pager: as the
referenced/dirty change logs on a normal boot, and as one log entry per reference, in
order, on a precise boot (exact LRU needs every reference, not only the first one that
set an accessed bit).  Driven through fake server ports: no server domains.
"""

from __future__ import annotations

from typing import Any, cast

from capkern._cspace import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.kernel import Kernel
from capkern.mmu._batch import access
from capkern.mmu._vm import VM, VMConfig
from capkern.testing.ports import FakePort, fake_crypt, fake_pager

RW = Rights.READ | Rights.WRITE


def _vm(pager: FakePort, *, precise: bool, ram: int = 4) -> tuple[VM, Domain]:
    def event(kind: str, dom: Domain | None, detail: str) -> None:
        pass

    vm = VM(VMConfig(ram, 1, 1.0, 1.0, precise=precise, seed=7), Counters(), event, pager,
            fake_crypt())
    dom = Domain(cast(Kernel, None), 1, "p1", "process", 16)
    vm.attach(dom)
    return vm, dom


def _handle(dom: Domain, addr: int) -> int:
    assert dom.aspace is not None
    return dom.aspace.pages[addr // PAGE_SIZE].handle


def _bodies(pager: FakePort, label: str) -> list[Any]:
    return [body for lab, body in pager.calls if lab == label]


async def test_precise_boot_logs_every_resident_reference_in_order() -> None:
    vm, dom = _vm(fake_pager(), precise=True)
    base = vm.mmap(dom, 2 * PAGE_SIZE, RW, None)
    await vm.write(dom, base, b"a")  # a fault, then the span path
    await vm.write(dom, base + PAGE_SIZE, b"b")
    for _ in range(3):  # the resident fast path, bits already set
        assert await vm.read(dom, base, 1) == b"a"
    await vm.write(dom, base + PAGE_SIZE, b"c")
    await vm.read(dom, base + PAGE_SIZE - 1, 2)  # spans both pages: two references
    h0, h1 = _handle(dom, base), _handle(dom, base + PAGE_SIZE)
    assert vm.reflog is not None
    assert vm.reflog.refs == [h0, h1, h0, h0, h0, h1, h0, h1]


async def test_normal_boot_keeps_no_reference_log() -> None:
    vm, dom = _vm(fake_pager(), precise=False)
    base = vm.mmap(dom, PAGE_SIZE, RW, None)
    for _ in range(3):
        await vm.write(dom, base, b"x")
    assert vm.reflog is None


async def test_a_full_log_is_observed_by_the_pager_before_the_access_returns() -> None:
    pager = fake_pager()
    vm, dom = _vm(pager, precise=True)
    assert vm.reflog is not None
    vm.reflog.limit = 5
    base = vm.mmap(dom, PAGE_SIZE, RW, None)
    await vm.write(dom, base, b"x")
    for _ in range(4):
        await vm.read(dom, base, 1)  # the fifth reference fills the log
    h = _handle(dom, base)
    observed = _bodies(pager, "observe")
    assert len(observed) == 1 and observed[0]["referenced"] == [h] * 5
    assert observed[0]["mapped"] == [h] and len(observed[0]["spaces"]) == 1
    assert vm.reflog.refs == []


async def test_batched_access_reaches_the_pagers_referenced_and_dirty_reports() -> None:
    """A normal boot: ``access`` sets bits the change logs must carry to the pager."""
    pager = fake_pager()
    vm, dom = _vm(pager, precise=False, ram=3)
    base = vm.mmap(dom, 4 * PAGE_SIZE, RW, None)
    vpn = base // PAGE_SIZE
    await access(vm, dom, [(vpn + i) * PAGE_SIZE for i in (0, 1, 2)])  # three zero-fills: RAM full
    # resident: bits only
    await access(vm, dom, [(vpn + i) * PAGE_SIZE for i in (0, 1)], write=True)
    await access(vm, dom, [(vpn + 3) * PAGE_SIZE])  # a fault: the eviction's report goes out
    (report,) = _bodies(pager, "evict")
    h0, h1 = _handle(dom, base), _handle(dom, base + PAGE_SIZE)
    assert {h0, h1} <= set(report["referenced"])
    assert set(report["dirty"]) == {h0, h1}
