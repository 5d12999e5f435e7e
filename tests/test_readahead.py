"""Read-ahead: a page-in that continues a sequential run brings the swapped pages after
it in the same trip (one fetch_many, one unseal), each verified like any page-in; a
fault off the run fetches only its own page; tampering with any page of a cluster is
refused, never mapped."""

from __future__ import annotations

from typing import Any, cast

import pytest

import capkern
from capkern import Rights, programs
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._trace import Counters
from capkern.errors import IntegrityFault
from capkern.kernel import Kernel
from capkern.mmu._vm import VM, VMConfig
from capkern.testing import BitFlip, Replay, attack_pager
from capkern.testing.ports import FakePort, fake_crypt, fake_pager, memory_pager


def _vm(pager: FakePort, readahead: int, ram: int = 8) -> tuple[VM, Counters, Domain]:
    stats = Counters()
    vm = VM(VMConfig(ram, 8, 1.0, 1.0, readahead), stats, lambda *a: None, pager,
            fake_crypt())
    dom = Domain(cast(Kernel, None), 1, "p", "process", 16)
    vm.attach(dom)
    return vm, stats, dom


async def _sweep(vm: VM, dom: Domain, pages: int, order: list[int] | None = None) -> int:
    base = vm.mmap(dom, pages * PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    for p in range(pages):
        await vm.write(dom, base + p * PAGE_SIZE, bytes([p + 1]) * 32)
    for p in order if order is not None else range(pages):
        assert await vm.read(dom, base + p * PAGE_SIZE, 32) == bytes([p + 1]) * 32
    return base


async def test_sequential_page_ins_come_in_clusters() -> None:
    pager = fake_pager()
    vm, stats, dom = _vm(pager, readahead=4)
    await _sweep(vm, dom, 32)
    fetches = [label for label, _ in pager.calls if label.startswith("fetch")]
    assert stats.readaheads > 0
    assert stats.page_ins + stats.readaheads >= 32 - 8  # every swapped page came in
    assert len(fetches) < (stats.page_ins + stats.readaheads) / 2  # clustered trips
    assert "fetch_many" in fetches


async def test_random_access_reads_only_the_faulting_page() -> None:
    pager = fake_pager()
    vm, stats, dom = _vm(pager, readahead=4)
    await _sweep(vm, dom, 32, order=[5, 20, 2, 28, 11, 17, 0, 25])
    assert stats.readaheads == 0
    assert all(label == "fetch" for label, _ in pager.calls if label.startswith("fetch"))


async def test_readahead_off_fetches_page_by_page() -> None:
    pager = fake_pager()
    vm, stats, _dom = _vm(pager, readahead=0)
    await _sweep(vm, _dom, 32)
    assert stats.readaheads == 0 and stats.page_ins >= 24


async def test_a_refused_neighbour_stays_swapped_and_faults_on_demand() -> None:
    handlers = memory_pager()
    honest = handlers["fetch_many"]

    async def flip_neighbours(body: Any) -> Any:
        blobs = (await honest(body))["blobs"]
        return {"blobs": [blobs[0]] + [b[:-1] + bytes([b[-1] ^ 1]) if b else b
                                       for b in blobs[1:]]}

    handlers["fetch_many"] = flip_neighbours
    vm, stats, dom = _vm(fake_pager(handlers), readahead=4)
    await _sweep(vm, dom, 32)  # every read checks its data: no tampered byte is mapped
    assert stats.readaheads == 0  # every neighbour was refused, none mapped
    assert stats.integrity_faults == 0  # each came in on demand, honestly fetched
    assert stats.unseals > stats.page_ins  # the refused copies were checked


async def test_a_tampered_faulting_page_in_a_cluster_is_an_integrity_fault() -> None:
    handlers = memory_pager()
    honest = handlers["fetch_many"]

    async def flip_first(body: Any) -> Any:
        blobs = (await honest(body))["blobs"]
        return {"blobs": [blobs[0][:-1] + bytes([blobs[0][-1] ^ 1]), *blobs[1:]]}

    handlers["fetch_many"] = flip_first
    vm, stats, dom = _vm(fake_pager(handlers), readahead=4)
    with pytest.raises(IntegrityFault):
        await _sweep(vm, dom, 32)
    assert stats.integrity_faults == 1


@pytest.mark.parametrize("tamper", [BitFlip("tag", seed=3), Replay()], ids=["bitflip", "replay"])
async def test_attacks_on_clusters_are_refused(tamper: Any, capkern_clock: Any) -> None:
    ev = capkern.testing.Evidence()
    async with capkern.boot(ram_pages=6, readahead=4, pager_deadline=1.0,
                            pager=attack_pager(tamper, evidence=ev)) as kernel:
        pids = [kernel.spawn(programs.sequential, 16, 3, seed) for seed in range(2)]
        statuses = [await kernel.wait(p) for p in pids]
    assert ev.tried[tamper.name] >= 1
    assert kernel.stats.integrity_faults >= 1
    assert all(s.ok or "IntegrityFault" in (s.error or "") for s in statuses), statuses
    assert ev.breaches == []


async def test_honest_pager_serves_clusters_end_to_end() -> None:
    async with capkern.boot(ram_pages=8, readahead=6, evict_batch=8) as kernel:
        pids = [kernel.spawn(programs.sequential, 40, 2, seed) for seed in range(2)]
        statuses = [await kernel.wait(p) for p in pids]
    assert all(s.ok for s in statuses), statuses
    assert kernel.stats.readaheads > 0 and kernel.stats.integrity_faults == 0


def test_readahead_option_is_checked() -> None:
    with pytest.raises(capkern.ConfigError):
        capkern.BootConfig(readahead=-1).validate()
