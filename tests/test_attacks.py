"""The design brief's security properties 1-5, one scenario per attacker in
:mod:`capkern.testing._attackers`, written with the capkern pytest plugin's fixtures
(``kernel_factory``, ``evidence``, ``capkern_clock``).

Each test states what the attacker could not do: no plaintext window ever reaches the
untrusted side (confidentiality); tampered, stale or misplaced pages are refused with
``IntegrityFault``, never wrong data (integrity, freshness, binding); a dropped page is
``PageInError``, a hung or crashed pager is ``PagerUnavailable`` within the deadline
while the rest of the system runs on (availability); protocol and confinement attacks
are refused without a breach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

import capkern
from capkern import programs
from capkern._pagefmt import PAGE_SIZE
from capkern.testing import (
    After,
    AttackPager,
    BitFlip,
    Crash,
    DiskBitFlip,
    DiskReplay,
    Drop,
    Evidence,
    ExhaustDisk,
    Extend,
    Flood,
    ForgeCaps,
    Garbage,
    Hang,
    Misdirect,
    Only,
    Oversized,
    PrevBoot,
    PrevIncarnation,
    Refuse,
    Replay,
    ReuseReply,
    Slow,
    Snoop,
    Sometimes,
    Swap,
    Tamper,
    Truncate,
    WrongLabel,
    Zeros,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_disk,
    attack_pager,
    expected_pages,
    is_typed_fault,
    run_workload,
)

PAGES, ROUNDS, RAM = 16, 2, 6
DEADLINE = 1.0


def _plain(procs: int, pages: int = PAGES, rounds: int = ROUNDS) -> list[bytes]:
    return [p for s in range(procs) for p in expected_pages(s, pages, rounds)]


def _failed_with(statuses: list[capkern.ExitStatus], fault: str) -> bool:
    return any(s.state == "failed" and f"capkern.errors.{fault}" in (s.error or "")
               for s in statuses)


async def _attack(kernel_factory: Any, evidence: Evidence, *tampers: Tamper, procs: int = 2,
                  ram: int = RAM, pages: int = PAGES, rounds: int = ROUNDS,
                  **opts: Any) -> tuple[list[capkern.ExitStatus], capkern.Kernel]:
    """Run ``procs`` copies of ``sequential`` with an attacking pager; check the
    properties every attack must leave intact."""
    pager = attack_pager(*tampers, evidence=evidence)
    opts.setdefault("pager_deadline", DEADLINE)
    async with kernel_factory(pager=pager, ram_pages=ram, **opts) as kernel:
        statuses = await run_workload(kernel, programs.sequential, pages, rounds,
                                      seeds=range(procs))
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(evidence, _plain(procs, pages, rounds))
    assert evidence.breaches == []
    return statuses, kernel


def _assert_refused_as_integrity_fault(statuses: list[capkern.ExitStatus],
                                       kernel: capkern.Kernel, evidence: Evidence,
                                       name: str) -> None:
    assert evidence.tried[name] >= 1, f"{name} never fired"
    assert kernel.stats.integrity_faults > 0
    # every refusal is logged as an event, not only counted
    assert kernel.stats.integrity_faults == len(kernel.events.of_kind("integrity_fault"))
    assert _failed_with(statuses, "IntegrityFault")
    assert all(s.ok or is_typed_fault(s) for s in statuses)


# -- confidentiality ---------------------------------------------------------------------------


async def test_snoop_sees_sizes_never_plaintext(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Snoop(), procs=3)
    assert all(s.ok for s in statuses)
    assert kernel.stats.seals > 0
    assert evidence.bytes_seen >= kernel.stats.seals * PAGE_SIZE
    assert not evidence.saw_window_of(_plain(3), window=8)  # even 15-byte runs
    # the detector itself works: a plaintext run *is* found when present
    evidence.seen.append(b"junk" + _plain(3)[5][100:200])
    assert evidence.saw_window_of(_plain(3), window=8)


# -- integrity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["nonce", "ciphertext", "tag", "any"])
async def test_bitflip_is_refused(region, kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, BitFlip(region, seed=7))
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, f"bitflip-{region}")


@pytest.mark.parametrize("tamper", [Truncate(1), Truncate(200), Extend(b"\x00"),
                                    Extend(b"x" * 64), Zeros()],
                         ids=["truncate-1", "truncate-200", "extend-1", "extend-64", "zeros"])
async def test_wrong_length_or_zero_page_is_refused(tamper, kernel_factory, evidence,
                                                    capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, tamper)
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, tamper.name)


# -- freshness and binding ---------------------------------------------------------------------


async def test_replay_of_older_version_is_refused(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Replay(), rounds=3)
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "replay")


async def test_swap_within_one_process_is_refused(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Swap(), procs=1)
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "swap")


class SwapAcross(Tamper):
    """Swap in the page of *another process*.  Which handle belongs to whom is opaque
    to a pager; the test lends it an oracle so the attack is exactly cross-process."""

    name = "swap-across"

    def __init__(self) -> None:
        self.owner: Callable[[int], int | None] = lambda h: None

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        mine = self.owner(handle)
        others = [h for h in pager.current if self.owner(h) not in (None, mine)]
        return pager.current[others[-1]] if others else blob


async def test_swap_across_processes_is_refused(kernel_factory, evidence, capkern_clock):
    swap = SwapAcross()
    pager = attack_pager(swap, evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        vm = kernel.vm
        assert vm is not None

        def owner(h: int) -> int | None:
            page = vm.res.handles.get(h)
            return None if page is None else page.aspace.asid

        swap.owner = owner
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(2))
    assert_no_wrong_reads(statuses)
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "swap-across")
    assert_no_plaintext(evidence, _plain(2))


async def test_misdirect_is_refused(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Misdirect())
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "misdirect")


class SamePosition(Tamper):
    """Answer a fetch with the blob stored at the same position of an earlier, identical
    run: same asid, vpn, version and plaintext -- only the incarnation (or the boot)
    differs, so only that part of the binding can refuse it."""

    name = "same-position"

    def __init__(self, reference: list[bytes] | None = None, reset_on_discard: bool = False):
        self.reference = reference
        self.reset_on_discard = reset_on_discard
        self.seq: list[tuple[int, bytes]] = []

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label == "store":
            self.seq.extend((h, b) for h, b in body["pages"])
        elif label == "discard" and self.reset_on_discard and self.reference is None:
            self.reference = [b for _h, b in self.seq]
            self.seq = []
        return False

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        pos = max((i for i, (h, _b) in enumerate(self.seq) if h == handle), default=None)
        if self.reference is None or pos is None or pos >= len(self.reference):
            return blob
        return self.reference[pos]


@pytest.mark.parametrize("tamper", [PrevIncarnation, lambda: SamePosition(reset_on_discard=True)],
                         ids=["prev-incarnation", "same-vpn-version-and-data"])
async def test_previous_incarnation_is_refused(tamper, kernel_factory, evidence, capkern_clock):
    attacker = tamper()
    pager = attack_pager(attacker, evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=4) as kernel:
        first = kernel.spawn(programs.sequential, 12, 2, 5, name="first")
        s_first = await kernel.wait(first)
        # same program, same seed: the same pages with the same contents and versions
        second = kernel.spawn(programs.sequential, 12, 2, 5, name="second")
        s_second = await kernel.wait(second)
        a1 = kernel._domain(first).aspace
        a2 = kernel._domain(second).aspace
    assert s_first.ok  # the attack only starts once there is a dead incarnation
    assert a1 is not None and a2 is not None
    assert (a2.asid, a2.incarnation) == (a1.asid, a1.incarnation + 1)  # the asid was reused
    assert_no_wrong_reads([s_second])
    _assert_refused_as_integrity_fault([s_second], kernel, evidence, attacker.name)
    assert_no_plaintext(evidence, expected_pages(5, 12, 2))


async def test_previous_boot_is_refused(kernel_factory, evidence, capkern_clock):
    old = Evidence()
    recorder = SamePosition()
    async with kernel_factory(pager=attack_pager(Snoop(), recorder, evidence=old),
                              ram_pages=4) as k1:
        (s1,) = await run_workload(k1, programs.sequential, 12, 2, seeds=[3])
    assert s1.ok
    old_blobs = [b for blobs in old.archive.values() for b in blobs]
    assert old_blobs

    for attacker in (PrevBoot(old_blobs), SamePosition([b for _h, b in recorder.seq])):
        ev = Evidence()
        async with kernel_factory(pager=attack_pager(attacker, evidence=ev),
                                  ram_pages=4) as k2:
            (s2,) = await run_workload(k2, programs.sequential, 12, 2, seeds=[3])
        assert_no_wrong_reads([s2])
        _assert_refused_as_integrity_fault([s2], k2, ev, attacker.name)
        assert_no_plaintext(ev, expected_pages(3, 12, 2))


# -- denial of service: bounded, typed, and only for those who depend on the pager ------------


async def test_drop_is_page_in_error(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Drop())
    assert evidence.tried["drop"] >= 1
    assert _failed_with(statuses, "PageInError")
    assert kernel.stats.page_in_errors > 0


@pytest.mark.parametrize("label,reason,fault", [("fetch", "io", "PageInError"),
                                                ("fetch", "integrity", "PageInError"),
                                                ("store", "io", "OutOfMemory"),
                                                ("fetch", "bogus", "PagerUnavailable")])
async def test_refuse_is_a_typed_error(label, reason, fault, kernel_factory, evidence,
                                       capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, Refuse(label, reason))
    assert _failed_with(statuses, fault)
    if reason == "bogus":  # a reason outside the contract: the reply itself is refused
        assert kernel.stats.pager_protocol_errors > 0
    else:
        assert evidence.tried["refuse"] >= 1
        assert kernel.stats.page_in_errors + kernel.stats.store_failures > 0


async def _with_bystanders(kernel_factory: Any, evidence: Evidence, tamper: Tamper,
                           ) -> tuple[capkern.ExitStatus, capkern.Kernel, float]:
    """A paging process under attack next to an IPC echo pair that never needs the pager."""
    async with kernel_factory(pager=attack_pager(tamper, evidence=evidence), ram_pages=4,
                              pager_deadline=DEADLINE) as kernel:
        ep = kernel.new_endpoint("echo")
        kernel.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
        start = trio.current_time()
        victim = kernel.spawn(programs.sequential, 12, 2, 1, name="victim")
        client = kernel.spawn(programs.echo_client, 100,
                              caps={"server": capkern.Grant(ep, "w")})
        s_client = await kernel.wait(client)
        s_victim = await kernel.wait(victim)
        elapsed = trio.current_time() - start
        assert s_client.ok  # the independent process ran on
        after = kernel.spawn(programs.echo_client, 3, caps={"server": capkern.Grant(ep, "w")})
        assert (await kernel.wait(after)).ok  # and the kernel is alive afterwards
        fits = kernel.spawn(programs.sequential, 0, 1, 1, name="no-paging")
        assert (await kernel.wait(fits)).ok
    assert_no_wrong_reads([s_victim])
    return s_victim, kernel, elapsed


@pytest.mark.parametrize("make", [Hang, Crash], ids=["hang", "crash"])
async def test_hang_and_crash_are_pager_unavailable_in_bounded_time(make, kernel_factory,
                                                                    evidence, capkern_clock):
    s_victim, kernel, elapsed = await _with_bystanders(kernel_factory, evidence, make())
    assert evidence.tried[make.name] >= 1
    assert _failed_with([s_victim], "PagerUnavailable")
    if make is Hang:
        assert kernel.stats.pager_timeouts >= 1
    else:
        assert any(d.name == "pager" and d.state == "failed" for d in kernel.domains())
    assert elapsed <= 3 * DEADLINE  # one deadline, not a hang
    assert evidence.breaches == []


async def test_slow_pager_costs_time_only(kernel_factory, evidence, capkern_clock):
    statuses, _ = await _attack(kernel_factory, evidence, Slow(0.1))
    assert all(s.ok for s in statuses)
    assert trio.current_time() > 1.0


# -- protocol attacks --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [Garbage, Oversized, WrongLabel],
                         ids=["garbage", "oversized", "wrong-label"])
async def test_protocol_attacks_are_refused(make, kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, make())
    assert evidence.breaches == []
    assert sum(evidence.refused.values()) > 0
    assert kernel.stats.pager_protocol_errors + kernel.stats.messages_rejected > 0
    assert all(s.ok or is_typed_fault(s) for s in statuses)
    assert not all(s.ok for s in statuses)  # paging was denied: service, never data


@pytest.mark.parametrize("make", [ForgeCaps, ReuseReply, lambda: Flood(20)],
                         ids=["forge-caps", "reuse-reply", "flood"])
async def test_confinement_attacks_fail_and_work_finishes(make, kernel_factory, evidence,
                                                          capkern_clock):
    statuses, _ = await _attack(kernel_factory, evidence, make())
    assert all(s.ok for s in statuses)
    assert evidence.breaches == []
    assert sum(evidence.refused.values()) >= 10
    assert set(evidence.refused) <= {"InvalidSlot", "EmptySlot", "InsufficientRights",
                                     "ReplyError", "ContractViolation", "WrongObjectType"}


# -- a full disk -------------------------------------------------------------------------------


async def test_exhausted_disk_is_out_of_memory(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, ExhaustDisk())
    assert _failed_with(statuses, "OutOfMemory")
    assert kernel.stats.store_failures > 0


async def test_disk_full_midway_keeps_earlier_data_readable(kernel_factory, evidence,
                                                            capkern_clock):
    full = [False]
    n, ram = 10, 6

    async def program(proc: capkern.Process) -> int:
        base = proc.mmap(n * PAGE_SIZE)
        for p in range(n):  # some of these are evicted and stored while the disk has room
            await proc.write(base + p * PAGE_SIZE, programs.page_pattern(9, p))
        full[0] = True  # (experimenter's switch) from now on every store is refused
        proc.munmap(base + ram * PAGE_SIZE, (n - ram) * PAGE_SIZE)  # RAM for the page-ins
        wrong = 0
        for p in range(ram):
            got = await proc.read(base + p * PAGE_SIZE, PAGE_SIZE)
            wrong += got != programs.page_pattern(9, p)
        if wrong:
            return wrong
        for p in range(ram):  # now every frame is dirty and nothing can be stored
            await proc.write(base + p * PAGE_SIZE, programs.page_pattern(9, p, 1))
        extra = proc.mmap(PAGE_SIZE)
        await proc.write(extra, b"one page too many")
        return 0

    pager = attack_pager(Only(ExhaustDisk(), lambda _n: full[0]), evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=ram) as kernel:
        status = await kernel.wait(kernel.spawn(program))
    assert kernel.stats.page_ins > 0  # the earlier data came back from the (full) disk
    assert kernel.stats.store_failures > 0
    assert _failed_with([status], "OutOfMemory"), status  # (not a wrong-read exit code)
    assert evidence.breaches == []


# -- malicious disks behind an honest pager ----------------------------------------------------


@pytest.mark.parametrize("disk", ["bitflip", "replay"])
async def test_malicious_disk_is_refused(disk, kernel_factory, evidence, capkern_clock):
    def factory(nblocks: int) -> Any:
        if disk == "bitflip":
            return DiskBitFlip(nblocks, evidence, every=2, seed=3)
        return DiskReplay(nblocks, evidence)

    async with kernel_factory(ram_pages=RAM, blockdev_server=attack_disk(factory)) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 3, seeds=range(2))
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(evidence, _plain(2, PAGES, 3))
    assert evidence.tried[f"disk-{disk}"] >= 1
    assert kernel.stats.integrity_faults > 0
    assert _failed_with(statuses, "IntegrityFault")


# -- compositions ------------------------------------------------------------------------------


async def test_only_every_third_request(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence,
                                     Only(BitFlip("tag", seed=1), lambda n: n % 3 == 0))
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "bitflip-tag")


async def test_only_by_label_leaves_the_rest_honest(kernel_factory, evidence, capkern_clock):
    statuses, _ = await _attack(kernel_factory, evidence, Only(Drop(), labels={"store"}))
    assert all(s.ok for s in statuses)  # Drop only acts on fetch, which is filtered out
    assert evidence.tried["drop"] == 0


async def test_after_n_requests(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(kernel_factory, evidence, After(Replay(), 20), rounds=3)
    _assert_refused_as_integrity_fault(statuses, kernel, evidence, "replay")


async def test_sometimes_is_deterministic_and_refused(kernel_factory, capkern_clock):
    outcomes = []
    for _ in range(2):
        ev = Evidence()
        statuses, kernel = await _attack(kernel_factory, ev, Sometimes(Zeros(), 0.3, seed=4),
                                         procs=3)
        _assert_refused_as_integrity_fault(statuses, kernel, ev, "zeros")
        outcomes.append(([s.state for s in statuses], ev.tried["zeros"]))
    assert outcomes[0] == outcomes[1]


async def test_stacked_composition(kernel_factory, evidence, capkern_clock):
    statuses, kernel = await _attack(
        kernel_factory, evidence,
        Sometimes(Snoop(), 0.5, seed=1),
        After(Only(Swap(), lambda n: n % 2 == 0), 10),
        Sometimes(Truncate(3), 0.2, seed=2), procs=3)
    assert kernel.stats.integrity_faults > 0
    assert all(s.ok or is_typed_fault(s) for s in statuses)


async def test_untouched_process_finishes_under_attack() -> None:
    """Processes that do not depend on the pager (IPC only) run on while it attacks."""
    ev = Evidence()
    async with capkern.boot(ram_pages=8, pager=attack_pager(BitFlip(), evidence=ev)) as k:
        ep = k.new_endpoint("echo")
        k.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
        big = k.spawn(programs.sequential, 24, 2, 8, name="big")
        client = k.spawn(programs.echo_client, 200, caps={"server": capkern.Grant(ep, "w")})
        s_big, s_client = await k.wait(big), await k.wait(client)
    assert s_client.ok
    assert_no_wrong_reads([s_big])
    assert not s_big.ok and k.stats.integrity_faults >= 1
