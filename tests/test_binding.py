"""Seal bindings never repeat within a boot: a place reused (munmap/mmap at the same
address, exit/respawn, asid reuse) never accepts a sealed copy of its earlier life."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import capkern
from capkern import programs
from capkern._cspace import Rights
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._aspace import PTE, AddressSpace
from capkern.mmu._binding import BindingError, Versions, binding
from capkern.testing import (
    Evidence,
    ReplayDiscarded,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    is_typed_fault,
)

ADDR = 0x4000_0000
OLD = b"OLD-SECRET-DATA!" * (PAGE_SIZE // 16)
NEW = b"fresh-page-data." * (PAGE_SIZE // 16)


SQUEEZE = 0x5000_0000


async def _squeeze(proc: capkern.Process, pages: int = 6) -> None:
    """Touch enough other pages that every earlier page is evicted (FIFO, tiny RAM).
    They stay mapped, so the only pages ever discarded are the ones a test unmaps."""
    try:
        proc.mmap(pages * PAGE_SIZE, addr=SQUEEZE)
    except capkern.ConfigError:
        pass  # mapped by an earlier squeeze
    for i in range(pages):
        await proc.write(SQUEEZE + i * PAGE_SIZE, bytes([i + 1]) * 16)


def _boot(ev: Evidence, **options: Any) -> Any:
    options.setdefault("ram_pages", 3)
    return capkern.boot(policy="fifo", evict_batch=1,
                        pager=attack_pager(ReplayDiscarded(), evidence=ev), **options)


async def test_remapped_page_never_loads_the_discarded_copy(capkern_clock: Any) -> None:
    """munmap, mmap at the same address, write, evict: the pager hands back the OLD
    page's sealed copy (same asid, incarnation, vpn -- and, before the fix, version)."""
    ev = Evidence()
    seen: dict[str, Any] = {}

    async def prog(proc: capkern.Process) -> None:
        base = proc.mmap(PAGE_SIZE, addr=ADDR)
        await proc.write(base, OLD)
        await _squeeze(proc)  # OLD is sealed and stored
        await _squeeze(proc)  # ... and so is every squeeze page
        proc.munmap(base, PAGE_SIZE)
        proc.mmap(PAGE_SIZE, addr=ADDR)
        await proc.write(ADDR, NEW)
        await _squeeze(proc)  # NEW is sealed and stored; the old copy was discarded
        try:
            seen["read"] = await proc.read(ADDR, PAGE_SIZE)
        except capkern.IntegrityFault as exc:
            seen["fault"] = exc

    async with _boot(ev) as kernel:
        status = await kernel.wait(kernel.spawn(prog))
    assert status.ok, status
    assert ev.tried["replay-discarded"] >= 1  # the old copy really was handed back
    assert seen.get("read") != OLD
    assert "fault" in seen and kernel.stats.integrity_faults == 1


async def test_read_only_zero_page_mapped_again_reads_zeros(capkern_clock: Any) -> None:
    """A page mapped read-only where a written page used to be reads zeros, and keeps
    reading zeros after it was evicted -- the pager is never asked for it."""
    ev = Evidence()
    reads: list[bytes] = []

    async def prog(proc: capkern.Process) -> None:
        proc.mmap(PAGE_SIZE, addr=ADDR)
        await proc.write(ADDR, OLD)
        await _squeeze(proc)
        await _squeeze(proc)
        proc.munmap(ADDR, PAGE_SIZE)
        proc.mmap(PAGE_SIZE, "r", addr=ADDR)
        for _ in range(3):
            reads.append(await proc.read(ADDR, PAGE_SIZE))
            await _squeeze(proc)

    async with _boot(ev) as kernel:
        status = await kernel.wait(kernel.spawn(prog))
    assert status.ok, status
    assert reads == [bytes(PAGE_SIZE)] * 3
    assert kernel.stats.integrity_faults == 0


@pytest.mark.parametrize("pick", ["newest", "oldest", "cycle"])
async def test_respawned_process_at_a_reused_asid_never_reads_its_predecessor(
        pick: str, capkern_clock: Any) -> None:
    ev = Evidence()
    got: list[bytes] = []

    async def writer(proc: capkern.Process) -> None:
        proc.mmap(2 * PAGE_SIZE, addr=ADDR)
        for i in range(2):
            await proc.write(ADDR + i * PAGE_SIZE, OLD)
        await _squeeze(proc)

    async def reader(proc: capkern.Process) -> None:
        proc.mmap(2 * PAGE_SIZE, addr=ADDR)
        for i in range(2):
            await proc.write(ADDR + i * PAGE_SIZE, NEW)
        await _squeeze(proc)
        for i in range(2):
            got.append(await proc.read(ADDR + i * PAGE_SIZE, PAGE_SIZE))

    async with capkern.boot(ram_pages=3, policy="fifo", evict_batch=1,
                            pager=attack_pager(ReplayDiscarded(pick), evidence=ev)) as kernel:
        first = kernel.spawn(writer)
        assert (await kernel.wait(first)).ok
        await trio.sleep(1)  # the writer's pages are discarded (the pool's delay)
        second = kernel.spawn(reader)
        status = await kernel.wait(second)
        a1, a2 = kernel._domain(first).aspace, kernel._domain(second).aspace
    assert a1 is not None and a2 is not None and a1.asid == a2.asid  # the asid was reused
    assert ev.tried["replay-discarded"] >= 1
    assert OLD not in got
    assert status.ok or is_typed_fault(status)
    assert not status.ok and "IntegrityFault" in (status.error or "")


async def test_remap_program_under_replay_of_discarded_pages(capkern_clock: Any) -> None:
    """The built-in ``remap`` program, several copies, under the kit's attacker: no
    wrong read and no plaintext, whatever was replayed."""
    ev = Evidence()
    async with capkern.boot(ram_pages=4, evict_batch=2,
                            pager=attack_pager(ReplayDiscarded("cycle"), evidence=ev)) as k:
        pids = [k.spawn(programs.remap, 6, 3, seed) for seed in range(3)]
        statuses = [await k.wait(p) for p in pids]
    assert_no_wrong_reads(statuses)
    assert ev.tried["replay-discarded"] >= 1
    assert k.stats.integrity_faults >= 1
    assert_no_plaintext(ev, [programs.page_pattern(s, p, r) for s in range(3)
                             for p in range(6) for r in range(3)])


# -- the counter, sans-IO ----------------------------------------------------------------------


def test_versions_never_repeat_for_fresh_entries_at_one_place() -> None:
    versions = Versions()
    space = AddressSpace(1, 0)
    bindings = [versions.next_seal(space, 0x20, PTE(Rights.READ, space, 0x20)) for _ in range(100)]
    assert len({tuple(b) for b in bindings}) == 100
    assert [b[3] for b in bindings] == list(range(1, 101))


def test_a_binding_that_cannot_be_encoded_is_refused_and_consumes_nothing() -> None:
    versions = Versions()
    space = AddressSpace(1, 1 << 64)  # an incarnation past its field
    with pytest.raises(BindingError):
        versions.next_seal(space, 0x20, PTE(Rights.READ, space, 0x20))
    assert versions.last == 0
    with pytest.raises(BindingError):
        binding(AddressSpace(1 << 32, 0), 0x20, 1)
    with pytest.raises(BindingError):
        binding(AddressSpace(1, 0), 1 << 36, 1)


ops = st.lists(st.tuples(st.sampled_from(["map", "unmap", "seal", "respawn"]),
                         st.integers(0, 7)), max_size=80)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_no_two_seals_share_a_binding_whatever_happens_to_the_places(ops: list[Any]) -> None:
    """Random map/unmap/respawn/seal sequences over a few pages at fixed addresses."""
    versions = Versions()
    incarnation = 0
    space = AddressSpace(1, incarnation)
    seen: set[tuple[int, ...]] = set()
    for op, page in ops:
        addr = ADDR + page * PAGE_SIZE
        vpn = addr // PAGE_SIZE
        if op == "map" and space.region_of(vpn) is None:
            space.map_region(1, Rights.READ | Rights.WRITE, addr)
        elif op == "unmap" and space.region_of(vpn) is not None:
            space.unmap_region(addr, PAGE_SIZE)
        elif op == "respawn":
            incarnation += 1
            space.unmap_all()
            space = AddressSpace(1, incarnation)  # the same asid, reused
        elif op == "seal":
            pte = space.touch(vpn)
            if pte is not None:
                bound = tuple(versions.next_seal(space, vpn, pte))
                assert bound not in seen
                seen.add(bound)


async def test_every_seal_of_a_boot_has_its_own_binding(monkeypatch: pytest.MonkeyPatch,
                                                        capkern_clock: Any) -> None:
    """Observed at the sealer itself over a real run that reuses places every way it can:
    munmap/mmap at the same address (remap), exit and respawn at a reused asid."""
    from capkern.servers.crypt import _sealer

    bindings: list[Any] = []
    real_seal = _sealer.Sealer.seal

    def recording_seal(self: Any, bound: Any, plaintext: bytes) -> bytes:
        bindings.append(bound)
        return real_seal(self, bound, plaintext)

    monkeypatch.setattr(_sealer.Sealer, "seal", recording_seal)
    async with capkern.boot(ram_pages=4, evict_batch=2) as kernel:
        for generation in range(3):
            pids = [kernel.spawn(programs.remap, 5, 3, seed) for seed in range(2)]
            statuses = [await kernel.wait(p) for p in pids]
            assert all(s.ok for s in statuses), (generation, statuses)
    places = {(b.asid, b.incarnation, b.vpn) for b in bindings}
    assert len(bindings) >= 2 * len(places)  # places really were sealed again and again
    assert len(set(bindings)) == len(bindings)
    assert len({b.version for b in bindings}) == len(bindings)


def test_a_reused_asid_comes_back_with_the_next_incarnation() -> None:
    from capkern.mmu._aspace import Asids

    asids = Asids()
    a, b = asids.take(), asids.take()
    assert a == (1, 0) and b == (2, 0)
    asids.put(1)
    assert asids.take() == (1, 1)  # same number, a new incarnation: a new binding
    asids.put(1)
    asids.put(2)
    assert sorted([asids.take(), asids.take()]) == [(1, 2), (2, 1)]
    assert asids.take() == (3, 0)
