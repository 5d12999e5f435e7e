"""Page-ins of a burst of faults share one ``fetch_many`` and one ``unseal``; each fault
keeps its own result and error; a lone fault goes alone; a bad pager still only denies
service (a batch is checked page by page)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import capkern
from capkern import Process
from capkern import _serverloop as serverloop
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._pageins import PageIns
from capkern.mmu._pageio import MISSING
from capkern.servers.pager import Pager, make_pager

PROCS, PAGES, RAM = 24, 12, 48


class Meddle:
    """How a test's pager treats ``fetch_many`` (and what it saw)."""

    def __init__(self, how: str = "honest") -> None:
        self.how = how
        self.labels: list[str] = []
        self.sizes: list[int] = []


def meddling_pager(meddle: Meddle) -> capkern.Program:
    class MeddlingPager(Pager):
        def handlers(self) -> serverloop.Table:
            return serverloop.around(super().handlers(), self.meddled)

        async def meddled(self, label: str, handler: serverloop.Handler, body: Any) -> Any:
            meddle.labels.append(label)
            if label == "fetch_many" and meddle.how == "unsupported":  # an older pager
                raise capkern.errors.ServerError(serverloop.UNSUPPORTED, "no fetch_many here")
            if label != "fetch_many":
                return await handler(body)
            meddle.sizes.append(len(body["handles"]))
            if meddle.how == "hold":  # never answered (the pager serves the rest)
                self.proc.save_caller()
                return serverloop.DEFERRED
            reply = await handler(body)
            if meddle.how == "swap":  # each page answered with another page's blob
                reply = {"blobs": reply["blobs"][1:] + reply["blobs"][:1]}
            elif meddle.how == "empty":  # "I have none of them" (it has them all)
                reply = {"blobs": [b""] * len(reply["blobs"])}
            return reply

    return make_pager(cls=MeddlingPager)


async def _write_then_read(proc: Process, pages: int) -> int:
    """Write a page-sized pattern to each page, then read every page back: wrong reads."""
    base = proc.mmap(pages * PAGE_SIZE)
    for i in range(pages):
        await proc.write(base + i * PAGE_SIZE, bytes([proc.pid % 251, i % 251]) * 2048)
    wrong = 0
    for i in range(pages):
        got = await proc.read(base + i * PAGE_SIZE, PAGE_SIZE)
        wrong += got != bytes([proc.pid % 251, i % 251]) * 2048
    return wrong


async def _burst(meddle: Meddle, procs: int = PROCS, **boot: Any
                 ) -> tuple[capkern.Kernel, list[capkern.ExitStatus], PageIns]:
    async with capkern.boot(pager=meddling_pager(meddle), ram_pages=RAM, **boot) as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(procs)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert kernel.vm is not None
        return kernel, statuses, kernel.vm.pageins


async def test_a_burst_of_page_ins_goes_in_one_trip() -> None:
    meddle = Meddle()
    kernel, statuses, pageins = await _burst(meddle)
    assert all(s.ok and s.code == 0 for s in statuses), statuses  # every read right
    assert pageins.batches > 0 and pageins.batched >= 2 * pageins.batches
    assert meddle.labels.count("fetch_many") == pageins.batches
    # fewer trips to the pager than page-ins: that is the point
    assert meddle.labels.count("fetch") + pageins.batches < kernel.stats.page_ins


async def test_a_lone_process_never_batches() -> None:
    meddle = Meddle()
    _kernel, statuses, pageins = await _burst(meddle, procs=1)
    assert statuses[0].ok and statuses[0].code == 0
    assert pageins.batches == 0 and "fetch_many" not in meddle.labels


async def test_pages_swapped_within_a_batch_are_refused_never_mapped() -> None:
    meddle = Meddle("swap")
    kernel, statuses, pageins = await _burst(meddle)
    assert pageins.batches > 0
    # every process either read right, or died of its own page's integrity fault
    assert all((s.ok and s.code == 0) or "IntegrityFault" in (s.error or "") for s in statuses)
    assert any("IntegrityFault" in (s.error or "") for s in statuses)
    assert kernel.stats.integrity_faults > 0


async def test_a_page_missing_from_a_batch_is_fetched_alone() -> None:
    meddle = Meddle("empty")
    _kernel, statuses, pageins = await _burst(meddle)
    assert all(s.ok and s.code == 0 for s in statuses), statuses
    assert pageins.batches > 0
    # every page of every batch came again, alone, and was right
    assert meddle.labels.count("fetch") >= pageins.batched


async def test_a_pager_without_fetch_many_is_asked_no_more_once_it_said_so() -> None:
    """A pager written before ``fetch_many`` answers it ``unsupported``: every page of
    that batch comes alone, and the kernel sends no batch from then on for the rest of
    the boot (only batches already in flight when the first answer came were asked)."""
    meddle = Meddle("unsupported")
    sent_when_off: list[bool] = []
    async with capkern.boot(pager=meddling_pager(meddle), ram_pages=RAM) as kernel:
        assert kernel.vm is not None
        pageins = kernel.vm.pageins
        fetch_each = pageins.io.fetch_each

        def watched(pages: Any) -> Any:
            sent_when_off.append(pageins.off)
            return fetch_each(pages)

        pageins.io.fetch_each = watched  # type: ignore[method-assign]
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        statuses = [await kernel.wait(pid) for pid in pids]
    assert all(s.ok and s.code == 0 for s in statuses), statuses
    assert pageins.off and pageins.batches >= 1
    assert meddle.labels.count("fetch_many") == pageins.batches == len(sent_when_off)
    assert not any(sent_when_off)  # never once the kernel knew


async def test_a_held_batch_falls_back_to_lone_fetches_after_its_deadline(
        capkern_clock: trio.testing.MockClock) -> None:
    meddle = Meddle("hold")
    began = trio.current_time()
    kernel, statuses, pageins = await _burst(meddle, pager_deadline=5.0)
    assert all(s.ok and s.code == 0 for s in statuses), statuses
    assert pageins.batches > 0 and kernel.stats.pager_timeouts == pageins.batches
    # each batch cost one deadline, not one per page in it
    assert trio.current_time() - began < 5.0 * (pageins.batches + 1)


# -- the batching rules, with a stand-in for the page transfers ----------------------------


class _Space:
    asid, incarnation = 1, 1


class _Entry:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.sealed_version = 1


class FakeIO:
    """PageIO's two fetches: page ``h`` is ``h`` as bytes; ``gate`` holds a batch."""

    def __init__(self) -> None:
        self.lone: list[int] = []
        self.batches: list[list[int]] = []
        self.gate = trio.Event()
        self.missing: set[int] = set()

    async def fetch(self, aspace: Any, vpn: int, pte: Any, cluster: Any = ()) -> list[bytes | None]:
        await trio.lowlevel.checkpoint()
        self.lone.append(pte.handle)
        return [bytes([pte.handle])]

    async def fetch_each(self, pages: list[Any]) -> list[Any]:
        self.batches.append([pte.handle for _a, _v, pte in pages])
        await self.gate.wait()
        return [MISSING if pte.handle in self.missing else bytes([pte.handle])
                for _a, _v, pte in pages]


async def _fault(pageins: PageIns, handle: int, gather: bool, out: dict[int, Any]) -> None:
    try:
        out[handle] = await pageins.fetch(_Space(), handle, _Entry(handle), gather)  # type: ignore[arg-type]
    except trio.Cancelled:
        out[handle] = "cancelled"
        raise


async def test_the_burst_joins_its_leader_and_each_gets_its_own_page() -> None:
    io = FakeIO()
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    io.missing = {3}
    async with trio.open_nursery() as nursery:
        for h in (1, 2, 3):  # woken together: whichever runs first leads, the rest join
            nursery.start_soon(_fault, pageins, h, True, out)
        await trio.testing.wait_all_tasks_blocked()
        assert len(io.batches) == 1 and sorted(io.batches[0]) == [1, 2, 3]
        io.gate.set()
    assert out == {1: [b"\x01"], 2: [b"\x02"], 3: [b"\x03"]}
    assert io.lone == [3]  # the page the batch lacked came alone
    assert pageins.batches == 1 and pageins.batched == 3


async def test_without_a_leader_every_fault_goes_alone() -> None:
    io = FakeIO()
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        for h in (1, 2, 3):
            nursery.start_soon(_fault, pageins, h, False, out)
    assert io.batches == [] and sorted(io.lone) == [1, 2, 3]


async def _fault_in_scope(pageins: PageIns, handle: int, gather: bool, out: dict[int, Any],
                          scope: trio.CancelScope) -> None:
    with scope:
        await _fault(pageins, handle, gather, out)


async def _batch_of_three(pageins: PageIns, io: FakeIO, nursery: trio.Nursery,
                          out: dict[int, Any]) -> dict[int, trio.CancelScope]:
    scopes = {h: trio.CancelScope() for h in (1, 2, 3)}
    for h in (1, 2, 3):
        nursery.start_soon(_fault_in_scope, pageins, h, True, out, scopes[h])
    await trio.testing.wait_all_tasks_blocked()
    assert len(io.batches) == 1 and sorted(io.batches[0]) == [1, 2, 3]
    return scopes


async def test_a_member_cancelled_in_a_batch_loses_nothing_of_the_others() -> None:
    io = FakeIO()
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        scopes = await _batch_of_three(pageins, io, nursery, out)
        member = io.batches[0][-1]  # the leader's page is first
        scopes[member].cancel()  # its fault gives up while the batch is under way
        await trio.testing.wait_all_tasks_blocked()
        io.gate.set()
    assert out.pop(member) == "cancelled"
    assert out == {h: [bytes([h])] for h in out} and len(out) == 2
    assert io.lone == []  # the others came with the batch


async def test_a_cancelled_leader_sends_its_members_alone() -> None:
    io = FakeIO()
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        scopes = await _batch_of_three(pageins, io, nursery, out)
        leader = io.batches[0][0]
        scopes[leader].cancel()  # the batch's trip is cancelled under way
    assert out.pop(leader) == "cancelled"
    assert out == {h: [bytes([h])] for h in out} and len(out) == 2
    assert sorted(io.lone) == sorted(out)


async def test_a_member_cancelled_before_the_batch_never_joins_it() -> None:
    io = FakeIO()
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    io.gate.set()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        scope.cancel()  # cancelled before it can even join
        nursery.start_soon(_fault, pageins, 1, True, out)
        nursery.start_soon(_fault_in_scope, pageins, 2, False, out, scope)
        nursery.start_soon(_fault, pageins, 3, True, out)
    assert out == {1: [b"\x01"], 2: "cancelled", 3: [b"\x03"]}
    assert all(2 not in batch for batch in io.batches)


@pytest.mark.parametrize("error", [capkern.errors.PagerUnavailable("down"),
                                   capkern.errors.ServerError("io", "disk")])
async def test_a_failed_batch_sends_everyone_alone(error: Exception) -> None:
    io = FakeIO()

    async def failing(pages: list[Any]) -> list[Any]:
        io.batches.append([pte.handle for _a, _v, pte in pages])
        raise error

    io.fetch_each = failing  # type: ignore[method-assign]
    pageins = PageIns(io)  # type: ignore[arg-type]
    out: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        for h in (1, 2, 3):
            nursery.start_soon(_fault, pageins, h, True, out)
    assert len(io.batches) == 1
    assert out == {1: [b"\x01"], 2: [b"\x02"], 3: [b"\x03"]} and sorted(io.lone) == [1, 2, 3]


async def test_bursts_batch_with_servers_in_their_own_os_processes_too() -> None:
    async with capkern.boot(isolation="process", ram_pages=RAM) as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert kernel.vm is not None
        pageins = kernel.vm.pageins
    assert all(s.ok and s.code == 0 for s in statuses), statuses
    assert pageins.batches > 0 and pageins.batched >= 2 * pageins.batches
