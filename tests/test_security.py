"""The design brief's security properties 1-5 against first simple attackers in the
pager's place (the full attacker library is exercised in test_attacks.py)."""

from __future__ import annotations

import trio

import capkern
from capkern import programs
from capkern.testing import (
    BitFlip,
    Crash,
    Evidence,
    Hang,
    PrevBoot,
    PrevIncarnation,
    Replay,
    Snoop,
    Swap,
    attack_pager,
)


def _plaintexts(seeds: range, pages: int, rounds: int) -> list[bytes]:
    return [programs.page_pattern(s, p, r) for s in seeds for p in range(pages)
            for r in range(rounds)]


async def _run(pager, *, ram: int = 6, procs: int = 2, pages: int = 20,
               rounds: int = 2, **opts) -> tuple[list[capkern.ExitStatus], capkern.Kernel]:
    async with capkern.boot(ram_pages=ram, pager=pager, pager_deadline=1.0, **opts) as kernel:
        pids = [kernel.spawn(programs.sequential, pages, rounds, s, name=f"w{s}")
                for s in range(procs)]
        return [await kernel.wait(p) for p in pids], kernel


def _no_wrong_data(statuses: list[capkern.ExitStatus]) -> None:
    for s in statuses:
        # a program returns its count of wrong bytes: any failure must be a typed fault
        assert s.ok or (s.state == "failed" and "Fault" in (s.error or "")), s


async def test_confidentiality_snooping_pager_sees_no_plaintext() -> None:
    ev = Evidence()
    statuses, _ = await _run(attack_pager(Snoop(), evidence=ev))
    assert all(s.ok for s in statuses)
    assert ev.bytes_seen > 20 * 4096  # it really was handed the pages...
    assert not ev.saw_window_of(_plaintexts(range(2), 20, 2))  # ...never their content
    # the detector itself works: a plaintext page *is* found when present
    ev.seen.append(b"junk" + programs.page_pattern(0, 3, 1)[100:200])
    assert ev.saw_window_of(_plaintexts(range(2), 20, 2))


async def test_integrity_bitflips_refused() -> None:
    for region in ("nonce", "ciphertext", "tag"):
        ev = Evidence()
        statuses, kernel = await _run(attack_pager(BitFlip(region), evidence=ev))
        _no_wrong_data(statuses)
        assert kernel.stats.integrity_faults >= 1
        assert any("IntegrityFault" in (s.error or "") for s in statuses)
        assert kernel.events.of_kind("integrity_fault")


async def test_freshness_replay_refused() -> None:
    ev = Evidence()
    statuses, kernel = await _run(attack_pager(Replay(), evidence=ev), rounds=3)
    assert ev.tried["replay"] >= 1
    _no_wrong_data(statuses)
    assert kernel.stats.integrity_faults >= 1


async def test_binding_swap_within_and_across_processes_refused() -> None:
    for procs in (1, 2):
        ev = Evidence()
        statuses, kernel = await _run(attack_pager(Swap(), evidence=ev), procs=procs)
        assert ev.tried["swap"] >= 1
        _no_wrong_data(statuses)
        assert kernel.stats.integrity_faults >= 1


async def test_binding_previous_incarnation_refused() -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=6, pager=attack_pager(PrevIncarnation(), evidence=ev)) as k:
        first = k.spawn(programs.sequential, 20, 1, 1)
        assert (await k.wait(first)).ok
        await trio.sleep(0.01)
        second = k.spawn(programs.sequential, 20, 2, 1)  # same asid, next incarnation
        status = await k.wait(second)
    assert ev.tried["prev-incarnation"] >= 1
    _no_wrong_data([status])
    assert not status.ok and "IntegrityFault" in (status.error or "")


async def test_binding_previous_boot_refused() -> None:
    ev = Evidence()
    statuses, _ = await _run(attack_pager(Snoop(), evidence=ev), procs=1)
    old = [b for blobs in ev.archive.values() for b in blobs]
    assert old
    ev2 = Evidence()
    statuses, kernel = await _run(attack_pager(PrevBoot(old), evidence=ev2), procs=1)
    assert ev2.tried["prev-boot"] >= 1
    _no_wrong_data(statuses)
    assert kernel.stats.integrity_faults >= 1


async def test_availability_hanging_pager_bounded_and_others_run(autojump_clock) -> None:
    async with capkern.boot(ram_pages=4, pager=attack_pager(Hang()), pager_deadline=2.0) as k:
        ep = k.new_endpoint("echo")
        k.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
        pager_user = k.spawn(programs.sequential, 12, 2, 1)
        t0 = trio.current_time()
        status = await k.wait(pager_user)
        assert "PagerUnavailable" in (status.error or "")
        assert trio.current_time() - t0 < 10  # bounded by the deadline, not forever
        client = k.spawn(programs.echo_client, 5, caps={"server": capkern.Grant(ep, "w")})
        assert (await k.wait(client)).ok
        assert k.stats.pager_timeouts >= 1


async def test_availability_crashing_pager(autojump_clock) -> None:
    async with capkern.boot(ram_pages=4, pager=attack_pager(Crash())) as k:
        status = await k.wait(k.spawn(programs.sequential, 12, 2, 1))
        assert "PagerUnavailable" in (status.error or "")
        # the kernel still spawns and runs processes that fit in RAM
        small = k.spawn(programs.sequential, 2, 2, 9)
        assert (await k.wait(small)).ok
        assert any(d.name == "pager" and d.state == "failed" for d in k.domains())
