"""A malicious pager answering a burst's batched page-ins (``fetch_many`` of pages of
several processes) still only denies service: never wrong data mapped, each fault its own
typed error, the kernel up, every frame free or mapped afterwards, the counters honest,
and every wait bounded by the pager's deadline."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio

import capkern
from capkern import Process
from capkern import _serverloop as serverloop
from capkern._pagefmt import PAGE_SIZE
from capkern.errors import ServerError
from capkern.pagerset._port import pager_set
from capkern.servers.pager import Pager, make_pager
from capkern.testing import attack_pager
from capkern.testing._attackers import Misdirect, PrevIncarnation, Replay, Tamper

PROCS, PAGES, RAM = 16, 12, 40
DEADLINE = 2.0
#: how a process may end under a pager that attacks it: right data, or its own typed error
TYPED = ("IntegrityFault", "PageInError", "PageLost", "PagerUnavailable")


class Attack:
    """How the pager treats ``fetch_many``, and what it saw."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.batches: list[list[int]] = []
        self.archive: dict[int, list[bytes]] = defaultdict(list)  # every blob stored
        self.held: list[tuple[float, int, Any]] = []  # (when, saved reply slot, reply)
        self.holding = trio.Event()  # "hold": a batch is being held...
        self.release = trio.Event()  # ...until the test lets it go


def attacking_pager(attack: Attack) -> capkern.Program:
    class BatchAttacker(Pager):
        async def serve(self) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.releaser)
                await super().serve()
                nursery.cancel_scope.cancel()

        async def releaser(self) -> None:
            """In "hold" mode, answer every held batch once the test says so."""
            await attack.release.wait()
            for _when, saved, late in attack.held:
                try:
                    self.proc.reply_to(saved, "ok", late)
                except capkern.errors.CapkernError:
                    pass

        def handlers(self) -> serverloop.Table:
            return serverloop.around(super().handlers(), self.attacked)

        async def attacked(self, label: str, handler: serverloop.Handler, body: Any) -> Any:
            now = trio.current_time()
            # "late": answer the calls held past their deadline, at the next request
            while attack.how == "late" and attack.held and attack.held[0][0] <= now:
                _when, saved, late = attack.held.pop(0)
                try:
                    self.proc.reply_to(saved, "ok", late)
                except capkern.errors.CapkernError:
                    pass
            if label == "store":
                for h, blob in body["pages"]:
                    attack.archive[h].append(blob)
            if label == "fetch" and attack.how == "hold_all" and not attack.release.is_set():
                attack.held.append((0.0, self.proc.save_caller(), await handler(body)))
                return serverloop.DEFERRED
            if label != "fetch_many":
                return await handler(body)
            handles = body["handles"]
            attack.batches.append(list(handles))
            how = attack.how
            if how == "late":  # held past the deadline, then answered (at a later call)
                reply = await handler(body)
                attack.held.append((trio.current_time() + DEADLINE * 1.5,
                                    self.proc.save_caller(), reply))
                return serverloop.DEFERRED
            if how in ("hold", "hold_all") and not attack.release.is_set():
                attack.held.append((0.0, self.proc.save_caller(), await handler(body)))
                attack.holding.set()
                return serverloop.DEFERRED
            if how == "twice":  # an honest answer, then a reordered one to the same call
                reply = await handler(body)
                self.proc.reply("ok", reply)
                with pytest.raises(capkern.errors.ReplyError):
                    self.proc.reply("ok", {"blobs": reply["blobs"][::-1]})
                return serverloop.DEFERRED
            if how == "error":
                raise ServerError("io", "the disk is on fire")
            reply = await handler(body)
            blobs = list(reply["blobs"])
            if how == "reverse":
                blobs.reverse()
            elif how == "duplicate":
                blobs = [blobs[0]] * len(blobs)
            elif how == "foreign":  # another page's newest copy in every slot
                others = [h for h in attack.archive if h not in handles]
                blobs = [attack.archive[others[i % len(others)]][-1] for i in range(len(blobs))]
            elif how == "stale":  # the oldest copy the pager was ever given of each page
                blobs = [attack.archive[h][0] for h in handles]
            elif how == "short":
                blobs = blobs[:-1]
            elif how == "long":
                blobs = blobs + blobs[:1]
            elif how == "some_empty":
                blobs = [b"" if i % 2 else b for i, b in enumerate(blobs)]
            elif how == "truncated":
                blobs = [b[:-1] for b in blobs]
            return {"blobs": blobs}

    return make_pager(cls=BatchAttacker)


async def _write_then_read(proc: Process, pages: int) -> int:
    """Write each page twice (so older sealed copies exist), read every page back
    twice: exit code 1 if any read was wrong."""
    base = proc.mmap(pages * PAGE_SIZE)
    for n in range(2):
        for i in range(pages):
            await proc.write(base + i * PAGE_SIZE, bytes([proc.pid % 251, i, n]) * 1365)
    wrong = 0
    for _ in range(2):
        for i in range(pages):
            got = await proc.read(base + i * PAGE_SIZE, 3 * 1365)
            wrong += got != bytes([proc.pid % 251, i, 1]) * 1365
    return 1 if wrong else 0


def _accounted(kernel: capkern.Kernel) -> int:
    vm = kernel.vm
    assert vm is not None
    return vm.frames.free_count + sum(d.resident_pages for d in kernel.domains())


async def _burst(attack: Attack, **boot: Any) -> tuple[capkern.Kernel, list[capkern.ExitStatus]]:
    boot = {"ram_pages": RAM, "pager_deadline": DEADLINE, **boot}
    async with capkern.boot(pager=attacking_pager(attack), **boot) as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert _accounted(kernel) == kernel.config.ram_pages  # every frame free or mapped
        assert not kernel.events.of_kind("internal_error")
        return kernel, statuses


def _typed(status: capkern.ExitStatus) -> bool:
    return (status.ok and status.code == 0) or any(t in (status.error or "") for t in TYPED)


@pytest.mark.parametrize("how", ["reverse", "duplicate", "foreign", "stale", "truncated"])
async def test_misplaced_or_stale_blobs_in_a_batch_are_each_faults_own_integrity_fault(
        how: str, capkern_clock: trio.testing.MockClock) -> None:
    attack = Attack(how)
    kernel, statuses = await _burst(attack)
    assert attack.batches, "no batch was made: the attack was not tried"
    assert all(s.code != 1 or s.ok for s in statuses)  # no wrong read ever returned
    assert all(_typed(s) for s in statuses), statuses
    died = [s for s in statuses if "IntegrityFault" in (s.error or "")]
    assert died
    # each refused page is counted once, as the fault of the process it belongs to
    assert kernel.stats.integrity_faults == len(died)


@pytest.mark.parametrize("how", ["short", "long", "some_empty", "error", "late", "twice"])
async def test_a_batch_answered_wrongly_costs_only_time(
        how: str, capkern_clock: trio.testing.MockClock) -> None:
    attack = Attack(how)
    began = trio.current_time()
    kernel, statuses = await _burst(attack)
    assert attack.batches
    assert all(s.ok and s.code == 0 for s in statuses), statuses  # every read right
    assert kernel.stats.integrity_faults == 0 and kernel.stats.page_in_errors == 0
    if how == "late":
        assert kernel.stats.pager_timeouts >= 1
    assert trio.current_time() - began < DEADLINE * (2 * len(attack.batches) + 2)


# -- cancellation and death while a batch is under way --------------------------------------


def _owners(kernel: capkern.Kernel, pids: list[int]) -> dict[int, int]:
    """handle -> pid, for the pages of ``pids`` (the test's view, not the pager's)."""
    out = {}
    for pid in pids:
        aspace = kernel._domain(pid).aspace
        if aspace is not None:
            out.update({pte.handle: pid for pte in aspace.pages.values() if pte.handle})
    return out


@pytest.mark.parametrize("who", ["leader", "member", "all"])
async def test_death_during_a_held_batch_loses_nothing_of_the_others(
        who: str, capkern_clock: trio.testing.MockClock) -> None:
    attack = Attack("hold")
    boot: dict[str, Any] = {"ram_pages": RAM, "pager_deadline": DEADLINE}
    async with capkern.boot(pager=attacking_pager(attack), **boot) as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        await attack.holding.wait()
        owners = _owners(kernel, pids)
        batch = [owners[h] for h in attack.batches[0]]
        victims = {"leader": batch[:1], "member": batch[1:2], "all": batch}[who]
        for pid in victims:
            kernel.kill(pid)
        await trio.sleep(0)
        attack.release.set()
        statuses = {pid: await kernel.wait(pid) for pid in pids}
        assert _accounted(kernel) == kernel.config.ram_pages
        assert not kernel.events.of_kind("internal_error")
    for pid, status in statuses.items():
        if pid in victims:
            assert status.state == "killed", status
        else:
            assert status.ok and status.code == 0, status
    assert kernel.stats.integrity_faults == 0 and kernel.stats.page_in_errors == 0


async def test_shutdown_during_a_held_batch_is_bounded(
        capkern_clock: trio.testing.MockClock) -> None:
    attack = Attack("hold")
    began = trio.current_time()
    async with capkern.boot(pager=attacking_pager(attack), ram_pages=RAM,
                            pager_deadline=DEADLINE) as kernel:
        for _ in range(PROCS):
            kernel.spawn(_write_then_read, PAGES)
        await attack.holding.wait()
        held = trio.current_time()
    assert trio.current_time() - held < DEADLINE
    assert trio.current_time() - began < 10 * DEADLINE


async def test_a_page_unmapped_while_its_batch_is_held_is_never_mapped(
        capkern_clock: trio.testing.MockClock) -> None:
    """A process's own sibling task unmaps (and maps anew, at the same address) a page
    whose page-in waits in a held batch (or alone: the pager holds every fetch): the old
    copy is never mapped at that address."""
    attack = Attack("hold_all")
    seen: dict[int, bytes] = {}
    unmapped_under_way: list[int] = []

    async def unmapper(proc: Process) -> int:
        base = proc.mmap(PAGES * PAGE_SIZE)
        for i in range(PAGES):
            await proc.write(base + i * PAGE_SIZE, b"old!" * 1024)
        await attack.holding.wait()

        async def reader() -> None:
            try:
                seen[proc.pid] = await proc.read(base, 4)
            except capkern.errors.CapkernError as exc:
                seen[proc.pid] = type(exc).__name__.encode()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.1)
            if proc.pid not in seen:  # its read waits for the pager
                unmapped_under_way.append(proc.pid)
            proc.munmap(base, PAGE_SIZE)
            proc.mmap(PAGE_SIZE, addr=base)
            attack.release.set()
        assert await proc.read(base, 4) == bytes(4)  # a fresh page, not the old one
        return 0

    async with capkern.boot(pager=attacking_pager(attack), ram_pages=RAM,
                            pager_deadline=DEADLINE) as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        pids += [kernel.spawn(unmapper) for _ in range(4)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert _accounted(kernel) == kernel.config.ram_pages
        assert not kernel.events.of_kind("internal_error")
    assert all(s.ok and s.code == 0 for s in statuses), statuses
    assert unmapped_under_way, "no page-in was under way at its munmap: not tried"
    assert all(seen[pid] != b"old!" for pid in unmapped_under_way), seen


# -- a pager set: each page's fate is its own pagers' ---------------------------------------


class SilentPager(Pager):
    """Stores honestly, but never answers a fetch (it keeps serving everything else)."""

    def handlers(self) -> serverloop.Table:
        return serverloop.around(super().handlers(), self.silent)

    async def silent(self, label: str, handler: serverloop.Handler, body: Any) -> Any:
        if label in ("fetch", "fetch_many"):
            self.proc.save_caller()
            return serverloop.DEFERRED
        return await handler(body)


async def test_a_silent_pager_of_a_set_holds_no_page_kept_by_another(
        capkern_clock: trio.testing.MockClock) -> None:
    """With a pager set, each page depends only on the pagers that hold it: a burst's
    page-in of a page kept by an honest member never waits for a silent member that
    holds another page of the burst (it did: the burst's one ``fetch_many`` to the set
    answered only when its slowest page did, a whole deadline later)."""
    waits: list[float] = []

    async def timed_reads(proc: Process, pages: int) -> int:
        base = proc.mmap(pages * PAGE_SIZE)
        for i in range(pages):
            await proc.write(base + i * PAGE_SIZE, bytes([proc.pid % 251, i]) * 2048)
        for _ in range(2):
            for i in range(pages):
                began = trio.current_time()
                try:
                    got = await proc.read(base + i * PAGE_SIZE, 2)
                except capkern.errors.PagerUnavailable:  # its page is on the silent one
                    continue
                if got != bytes([proc.pid % 251, i]):
                    return 1
                waits.append(trio.current_time() - began)
        return 0

    async with capkern.boot(pagers=[make_pager(), make_pager(cls=SilentPager)], copies=1,
                            ram_pages=RAM, pager_deadline=DEADLINE) as kernel:
        pids = [kernel.spawn(timed_reads, PAGES) for _ in range(PROCS)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert _accounted(kernel) == kernel.config.ram_pages
    assert all(s.code != 1 for s in statuses), statuses
    assert len(waits) > PROCS * PAGES // 2  # most pages are on the honest member
    assert max(waits) < DEADLINE / 2, sorted(waits)[-5:]


async def test_a_silent_pager_of_a_set_fails_no_read_ahead_of_a_page_kept_by_another(
        capkern_clock: trio.testing.MockClock) -> None:
    """Read-ahead over a pager set: a fault whose own page an honest member keeps is
    served, whatever a silent member does with the neighbours it holds (it was not: the
    cluster's one ``fetch_many`` timed out, and the fault failed with PagerUnavailable)."""
    wrong: list[int] = []  # pages kept by the honest member whose read failed

    async def sequential(proc: Process, pages: int) -> int:
        base = proc.mmap(pages * PAGE_SIZE)
        for i in range(pages):
            await proc.write(base + i * PAGE_SIZE, bytes([i]) * 4096)
        for i in range(pages):
            began = trio.current_time()
            try:
                got = await proc.read(base + i * PAGE_SIZE, 1)
            except capkern.errors.PagerUnavailable:
                aspace = kernel._domain(proc.pid).aspace
                assert aspace is not None and pagers is not None
                if pagers.holders.get(aspace.pages[base // PAGE_SIZE + i].handle) != (1,):
                    wrong.append(i)  # not (only) on the silent member
                continue
            if got != bytes([i]) or trio.current_time() - began >= DEADLINE / 2:
                wrong.append(i)
        return 0

    async with capkern.boot(pagers=[make_pager(), make_pager(cls=SilentPager)], copies=1,
                            ram_pages=16, pager_deadline=DEADLINE, readahead=4) as kernel:
        pagers = pager_set(kernel)
        status = await kernel.wait(kernel.spawn(sequential, 48))
        assert _accounted(kernel) == kernel.config.ram_pages
        readaheads = kernel.stats.readaheads
    assert status.ok and status.code == 0, status
    assert wrong == []
    assert readaheads > 0  # (the neighbours the honest member keeps still come along)


@pytest.mark.parametrize("tamper", [Misdirect(), Replay(), PrevIncarnation()],
                         ids=lambda t: t.name)
async def test_a_pager_in_its_own_os_process_gains_nothing_from_batches(tamper: Tamper) -> None:
    """The kit's tampers (each applied to every blob of a ``fetch_many``) against bursts,
    with the servers in their own OS processes: refused page by page, never mapped."""
    pager = attack_pager(tamper)
    async with capkern.boot(pager=pager, ram_pages=RAM, isolation="process") as kernel:
        pids = [kernel.spawn(_write_then_read, PAGES) for _ in range(PROCS)]
        statuses = [await kernel.wait(pid) for pid in pids]
        assert kernel.vm is not None and kernel.vm.pageins.batches > 0
        assert _accounted(kernel) == kernel.config.ram_pages
        assert not kernel.events.of_kind("internal_error")
        died = [s for s in statuses if "IntegrityFault" in (s.error or "")]
        assert died and kernel.stats.integrity_faults == len(died)
    assert all(_typed(s) and s.code != 1 for s in statuses), statuses
