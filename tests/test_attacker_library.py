"""Every attacker in capkern.testing, in the pager's (or disk's) place, against the real
kernel: each attack fails in its stated way -- a typed fault, never wrong data, never
plaintext, never a confinement breach."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

import capkern
from capkern import programs
from capkern.testing import (
    After,
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
    run_workload,
)

PAGES, ROUNDS = 16, 2


async def _attack(tamper: Tamper, *, procs: int = 2, ram: int = 6,
                  **opts: Any) -> tuple[list[capkern.ExitStatus], capkern.Kernel, Evidence]:
    ev = Evidence()
    async with capkern.boot(ram_pages=ram, pager=attack_pager(tamper, evidence=ev),
                            pager_deadline=1.0, **opts) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(procs))
    plain = [p for s in range(procs) for p in expected_pages(s, PAGES, ROUNDS)]
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(ev, plain)
    assert ev.breaches == []
    return statuses, kernel, ev


def _failed_with(statuses: list[capkern.ExitStatus], fault: str) -> bool:
    return any(s.state == "failed" and fault in (s.error or "") for s in statuses)


TAMPERING: list[tuple[str, Callable[[], Tamper]]] = [
    ("bitflip-nonce", lambda: BitFlip("nonce", seed=1)),
    ("bitflip-ciphertext", lambda: BitFlip("ciphertext", seed=2)),
    ("bitflip-tag", lambda: BitFlip("tag", seed=3)),
    ("bitflip-any", lambda: BitFlip("any", seed=4)),
    ("truncate", lambda: Truncate(7)),
    ("extend", lambda: Extend(b"more")),
    ("replay", Replay),
    ("swap", Swap),
    ("misdirect", Misdirect),
    ("zeros", Zeros),
]


@pytest.mark.parametrize("name,make", TAMPERING, ids=[t[0] for t in TAMPERING])
async def test_tampered_pages_are_integrity_faults(name: str, make: Callable[[], Tamper]) -> None:
    statuses, kernel, ev = await _attack(make())
    assert sum(ev.tried.values()) >= 1, "the attack never fired"
    assert _failed_with(statuses, "IntegrityFault")
    assert kernel.stats.integrity_faults >= 1
    assert kernel.stats.integrity_faults == len(kernel.events.of_kind("integrity_fault"))


async def test_snoop_learns_nothing_but_sizes() -> None:
    statuses, kernel, ev = await _attack(Snoop())
    assert all(s.ok for s in statuses)
    assert ev.bytes_seen >= kernel.stats.seals * 4096


async def test_drop_is_a_page_in_error() -> None:
    statuses, kernel, _ = await _attack(Drop())
    assert _failed_with(statuses, "PageInError")
    assert kernel.stats.page_in_errors >= 1


@pytest.mark.parametrize("make", [Hang, Crash], ids=["hang", "crash"])
async def test_hang_and_crash_are_bounded(make: Callable[[], Tamper],
                                          autojump_clock: trio.abc.Clock) -> None:
    statuses, _, _ = await _attack(make())
    assert _failed_with(statuses, "PagerUnavailable")
    assert trio.current_time() < 60  # every wait was bounded by the deadline


async def test_slow_pager_costs_time_only(autojump_clock: trio.abc.Clock) -> None:
    statuses, _, _ = await _attack(Slow(0.2))
    assert all(s.ok for s in statuses)
    assert trio.current_time() > 1


@pytest.mark.parametrize("make", [Garbage, Oversized, WrongLabel],
                         ids=["garbage", "oversized", "wrong-label"])
async def test_protocol_garbage_is_refused(make: Callable[[], Tamper]) -> None:
    statuses, kernel, ev = await _attack(make())
    assert sum(ev.refused.values()) >= 1  # the attacker's own replies were refused
    assert kernel.stats.pager_protocol_errors + kernel.stats.messages_rejected >= 1
    assert not all(s.ok for s in statuses)  # paging was denied: service, not data


@pytest.mark.parametrize("make", [ForgeCaps, ReuseReply, lambda: Flood(10)],
                         ids=["forge-caps", "reuse-reply", "flood"])
async def test_confinement_attacks_fail_and_work_continues(make: Callable[[], Tamper]) -> None:
    statuses, _, ev = await _attack(make())
    assert all(s.ok for s in statuses)
    assert sum(ev.refused.values()) >= 10
    assert set(ev.refused) <= {"InvalidSlot", "EmptySlot", "InsufficientRights", "ReplyError",
                                "ContractViolation", "WrongObjectType"}


async def test_exhausted_disk_is_out_of_memory_without_data_loss() -> None:
    statuses, kernel, _ = await _attack(ExhaustDisk())
    assert _failed_with(statuses, "OutOfMemory")
    assert kernel.stats.store_failures >= 1


async def test_disk_exhausted_midway_keeps_earlier_data() -> None:
    # honest for a while, then the disk is "full": what was stored stays readable
    statuses, kernel, _ = await _attack(After(ExhaustDisk(), 40), procs=1)
    assert kernel.stats.page_ins >= 1 or all(s.ok for s in statuses)


@pytest.mark.parametrize("disk", ["bitflip", "replay"])
async def test_malicious_disk_behind_honest_pager(disk: str) -> None:
    ev = Evidence()
    factory = ((lambda n: DiskBitFlip(n, ev, every=3)) if disk == "bitflip"
               else (lambda n: DiskReplay(n, ev)))
    async with capkern.boot(ram_pages=6, blockdev_server=attack_disk(factory)) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 3, seeds=range(2))
    assert_no_wrong_reads(statuses)
    assert_no_plaintext(ev, [p for s in range(2) for p in expected_pages(s, PAGES, 3)])
    assert sum(ev.tried.values()) >= 1
    assert kernel.stats.integrity_faults >= 1


async def test_compositions_only_after_sometimes() -> None:
    # attack only every 5th request, only after 30 requests, or with p = 0.3
    for tamper in (Only(BitFlip(seed=5), lambda n: n % 5 == 0),
                   After(Replay(), 30),
                   Sometimes(Zeros(), 0.3, seed=9)):
        _, kernel, ev = await _attack(tamper, procs=3)
        if sum(ev.tried.values()):
            assert kernel.stats.integrity_faults >= 1
        assert kernel.stats.faults > 0


async def test_only_by_label_leaves_other_requests_honest() -> None:
    statuses, _, ev = await _attack(Only(Drop(), labels={"evict"}))
    assert all(s.ok for s in statuses)  # drop only answers fetch: labels filter it out
    assert ev.tried["drop"] == 0


