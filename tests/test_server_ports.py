"""The fault path behind its server ports: a VM with fake pager and sealer ports (no
server domain, no kernel) pages correctly, makes only in-contract requests, and turns
every failure of the untrusted pager into a typed, bounded error."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio

from capkern import Rights
from capkern._domain import Domain
from capkern._pagefmt import PAGE_SIZE
from capkern._protocols import PAGER
from capkern._trace import Counters
from capkern.errors import (
    ContractViolation,
    IntegrityFault,
    OutOfMemory,
    PageInError,
    PagerUnavailable,
    ServerError,
)
from capkern.kernel import Kernel
from capkern.mmu._ports import IpcPort
from capkern.mmu._vm import VM, VMConfig
from capkern.mmu._watchdog import Watchdog
from capkern.testing.ports import FakePort, fake_crypt, fake_pager, memory_pager

Events = list[tuple[str, str]]


def _vm(pager: FakePort, crypt: FakePort | None = None, ram: int = 4, batch: int = 2,
        deadline: float = 1.0) -> tuple[VM, Counters, Events]:
    stats, events = Counters(), []

    def event(kind: str, dom: Domain | None, detail: str) -> None:
        events.append((kind, detail))

    vm = VM(VMConfig(ram, batch, deadline, deadline), stats, event, pager,
            crypt if crypt is not None else fake_crypt())
    return vm, stats, events


def _process(vm: VM, pid: int = 1) -> Domain:
    dom = Domain(cast(Kernel, None), pid, f"p{pid}", "process", 16)  # the VM needs no kernel
    vm.attach(dom)
    return dom


async def _fill(vm: VM, dom: Domain, pages: int) -> int:
    base = vm.mmap(dom, pages * PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    for p in range(pages):
        await vm.write(dom, base + p * PAGE_SIZE, bytes([p + 1]) * 64)
    return base


async def test_pages_round_trip_through_fake_ports_with_in_contract_requests() -> None:
    pager = fake_pager()
    vm, stats, _ = _vm(pager)
    dom = _process(vm)
    base = await _fill(vm, dom, 12)
    for _ in range(2):
        for p in range(12):
            assert await vm.read(dom, base + p * PAGE_SIZE, 64) == bytes([p + 1]) * 64
    assert stats.page_ins >= 12 and stats.evictions >= 12
    assert vm.frames.free_count + sum(p.present for p in dom.aspace.pages.values()) == 4  # type: ignore[union-attr]
    labels = {label for label, _ in pager.calls}
    assert {"evict", "store", "fetch"} <= labels  # each request passed PAGER's check


async def test_tampered_page_from_the_port_is_an_integrity_fault() -> None:
    handlers = memory_pager()
    honest_fetch = handlers["fetch"]

    async def flip(body: Any) -> Any:
        blob = bytearray((await honest_fetch(body))["blob"])
        blob[20] ^= 1
        return {"blob": bytes(blob)}

    handlers["fetch"] = flip
    vm, stats, events = _vm(fake_pager(handlers))
    dom = _process(vm)
    base = await _fill(vm, dom, 6)
    with pytest.raises(IntegrityFault):
        await vm.read(dom, base, 8)
    assert stats.integrity_faults == 1 and ("integrity_fault", "page 0x10000 refused") in events
    assert not dom.aspace.pages[base // PAGE_SIZE].present  # type: ignore[union-attr]


async def test_hung_pager_port_fails_the_fault_after_one_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    handlers = memory_pager()

    async def hang(body: Any) -> Any:
        await trio.sleep_forever()

    vm, stats, _ = _vm(fake_pager(handlers), deadline=2.0)
    dom = _process(vm)
    base = await _fill(vm, dom, 6)
    handlers["fetch"] = hang
    t0 = trio.current_time()
    with pytest.raises(PagerUnavailable):
        await vm.read(dom, base, 8)
    assert trio.current_time() - t0 == pytest.approx(2.0)
    assert stats.pager_timeouts == 1


@pytest.mark.parametrize("bad", [{"blob": 7}, {"blob": b"x", "extra": 1}, [1, 2]])
async def test_out_of_contract_pager_reply_is_pager_unavailable(bad: Any) -> None:
    handlers = memory_pager()
    vm, stats, _ = _vm(fake_pager(handlers))
    dom = _process(vm)
    base = await _fill(vm, dom, 6)

    async def broken(body: Any) -> Any:
        return bad

    handlers["fetch"] = broken
    with pytest.raises(PagerUnavailable):
        await vm.read(dom, base, 8)
    assert stats.pager_protocol_errors == 1
    # the data is still there for an honest answer
    handlers["fetch"] = memory_pager()["fetch"]  # a pager that lost it: typed, not zeros
    with pytest.raises(PageInError):
        await vm.read(dom, base, 8)


async def test_pager_refusing_every_store_loses_no_data() -> None:
    handlers = memory_pager()

    async def no_space(body: Any) -> Any:
        raise ServerError("no_space", "full")

    handlers["store"] = no_space
    vm, stats, events = _vm(fake_pager(handlers))
    dom = _process(vm)
    base = await _fill(vm, dom, 4)  # RAM is full
    extra = vm.mmap(dom, PAGE_SIZE, Rights.READ | Rights.WRITE, None)
    with pytest.raises(OutOfMemory):
        await vm.write(dom, extra, b"x")
    for p in range(4):
        assert await vm.read(dom, base + p * PAGE_SIZE, 64) == bytes([p + 1]) * 64
    assert stats.store_failures >= 1 and any(k == "pager_error" for k, _ in events)


async def test_fake_port_refuses_an_out_of_contract_request() -> None:
    port = fake_pager()
    with pytest.raises(ContractViolation):
        await port.call("fetch", {"handle": -1}, 1.0)
    with pytest.raises(ContractViolation):
        await port.call("evict", {"n": 1, "mapped": [True], "referenced": [], "dirty": []}, 1.0)
    assert port.calls == []


async def test_ipc_port_checks_requests_only_when_asked(bare_kernel: Kernel) -> None:
    kernel = bare_kernel
    ep = kernel.new_endpoint("pager", PAGER)
    cap = kernel.root.cspace.lookup(ep.slot)
    watchdog = Watchdog()
    kernel.start_soon(watchdog.run, name="watchdog")
    checked = IpcPort(kernel.root, cap, watchdog, check_requests=True)
    with pytest.raises(ContractViolation):
        await checked.call("fetch", {"handle": "nope"}, 1.0)
    trusting = IpcPort(kernel.root, cap, watchdog)
    with pytest.raises(PagerUnavailable):  # no server: it goes out, nobody answers
        await trusting.call("fetch", {"handle": 1}, 0.01)
    assert checked.name == trusting.name == cap.obj.label()


def test_ports_satisfy_the_protocol() -> None:
    from capkern.mmu._ports import ServerPort

    port: ServerPort = fake_pager()
    assert port.name == "fake-pager"
