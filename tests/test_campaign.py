"""Property-based adversarial campaign.

Hypothesis draws a multi-process workload (programs, working-set sizes, RAM pressure,
replacement policy) and a mix of attackers composed over an honest pager (each tamper
wrapped in Sometimes/After/Only, sometimes with a malicious disk behind the pager), runs
it on an autojump clock and checks:

* zero wrong reads: every program verifies every read against the last value it wrote,
  so each process either exits 0 or fails with a typed capkern Fault;
* no plaintext window of any page reached the attacker;
* no confinement breach was recorded;
* the kernel is alive: an IPC-only client that never needs the pager finished
  correctly while the attack ran, and a fresh call after the workload succeeds.

A second campaign puts the same mixes in pager sets (one member of a mirror, two of an
erasure-coded set) and asks more: every process finishes with correct data.

CI runs 8 examples (about 3 s); for a long campaign set
``CAPKERN_CAMPAIGN_EXAMPLES`` (e.g. ``CAPKERN_CAMPAIGN_EXAMPLES=2000 pytest
tests/test_campaign.py``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import capkern
from capkern import programs
from capkern.testing import (
    After,
    AttachCaps,
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
    HoardQuota,
    Misdirect,
    Only,
    Oversized,
    PrevIncarnation,
    Replay,
    ReplayDiscarded,
    ReuseReply,
    RevokeRace,
    Slow,
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
    is_typed_fault,
    page_pattern_for,
)

EXAMPLES = int(os.environ.get("CAPKERN_CAMPAIGN_EXAMPLES", "20"))

TAMPERS: dict[str, Callable[[int], Tamper]] = {
    "bitflip": lambda s: BitFlip("any", seed=s), "truncate": lambda s: Truncate(1 + s % 9),
    "extend": lambda s: Extend(b"x" * (1 + s % 5)), "replay": lambda s: Replay(),
    "swap": lambda s: Swap(), "misdirect": lambda s: Misdirect(), "zeros": lambda s: Zeros(),
    "drop": lambda s: Drop(), "hang": lambda s: Hang(), "crash": lambda s: Crash(),
    "garbage": lambda s: Garbage(), "wrong-label": lambda s: WrongLabel(),
    "forge": lambda s: ForgeCaps(), "reuse": lambda s: ReuseReply(),
    "oversized": lambda s: Oversized(), "flood": lambda s: Flood(1 + s % 5),
    "slow": lambda s: Slow(0.01 * (1 + s % 20)), "prev-incarnation": lambda s: PrevIncarnation(),
    "exhaust-disk": lambda s: ExhaustDisk(),
    "replay-discarded": lambda s: ReplayDiscarded(("newest", "oldest", "cycle")[s % 3],
                                                  "all" if s % 2 else "new"),
    "attach-caps": lambda s: AttachCaps(1 + s % 3), "hoard-quota": lambda s: HoardQuota(),
    "revoke-race": lambda s: RevokeRace(),
}
PROGRAMS: dict[str, Callable[[int, int], tuple[Any, ...]]] = {
    "sequential": lambda pages, seed: (programs.sequential, pages, 2, seed),
    "random": lambda pages, seed: (programs.random_ws, pages, 3 * pages, seed),
    "zipf": lambda pages, seed: (programs.zipf, pages, 3 * pages, 1.1, seed),
    "phased": lambda pages, seed: (programs.phased, pages, 3, seed),
    "remap": lambda pages, seed: (programs.remap, pages, 3, seed),
}

attack_mix = st.lists(
    st.tuples(st.sampled_from(sorted(TAMPERS)), st.integers(0, 1000),
              st.sampled_from(["sometimes", "after", "only"]), st.floats(0.05, 0.5)),
    min_size=1, max_size=3)
workload = st.lists(st.tuples(st.sampled_from(sorted(PROGRAMS)), st.integers(6, 20)),
                    min_size=1, max_size=3)


def _every(k: int, n: int) -> bool:
    return n % k == 0


def _compose(mix: list[tuple[str, int, str, float]]) -> list[Tamper]:
    out: list[Tamper] = []
    for name, seed, how, p in mix:
        tamper = TAMPERS[name](seed)
        if how == "sometimes":
            out.append(Sometimes(tamper, p, seed))
        elif how == "after":
            out.append(After(tamper, int(p * 100)))
        else:  # every k-th request
            out.append(Only(tamper, functools.partial(_every, max(2, int(1 / p)))))
    return out


def _disk(kind: str, ev: Evidence, seed: int) -> dict[str, Any]:
    """Boot options for a malicious disk behind the (attacking) pager, or none."""
    if kind == "bitflip":
        return {"blockdev_server": attack_disk(
            lambda n: DiskBitFlip(n, ev, every=3 + seed % 5, seed=seed))}
    if kind == "replay":
        return {"blockdev_server": attack_disk(lambda n: DiskReplay(n, ev))}
    return {}


async def _episode(mix: list[Any], work: list[Any], ram: int, policy: str, disk: str) -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=ram, policy=policy, pager_deadline=1.0,
                            pager=attack_pager(*_compose(mix), evidence=ev),
                            **_disk(disk, ev, len(work) + ram)) as k:
        ep = k.new_endpoint("echo")
        k.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
        bystander = k.spawn(programs.echo_client, 50,
                            caps={"server": capkern.Grant(ep, "w")})
        hostile = k.spawn(programs.hostile_memory)  # bad addresses, lengths, counts
        pids = []
        for seed, (prog, pages) in enumerate(work):
            program, *args = PROGRAMS[prog](pages, seed)
            pids.append(k.spawn(program, *args, name=f"{prog}{seed}"))
        statuses = [await k.wait(p) for p in pids]
        assert (await k.wait(bystander)).ok
        # every bad input refused (exit 0); it may die of a typed fault of its own page
        # when the attacked pager cannot make room for it
        hs = await k.wait(hostile)
        assert hs.ok or is_typed_fault(hs), hs
        after = k.spawn(programs.echo_client, 3, caps={"server": capkern.Grant(ep, "w")})
        assert (await k.wait(after)).ok  # the kernel and IPC still work
    assert_no_wrong_reads(statuses)
    assert ev.breaches == []
    plain = [page_pattern_for(prog, pages, seed) for seed, (prog, pages) in enumerate(work)]
    # with no more pages than frames nothing needs evicting: the pager may see nothing
    pressure = sum(pages for _prog, pages in work) > ram
    assert_no_plaintext(ev, [p for pages in plain for p in pages], require_seen=pressure)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mix=attack_mix, work=workload, ram=st.integers(3, 10),
       policy=st.sampled_from(["fifo", "clock", "lru", "random"]),
       disk=st.sampled_from(["honest", "honest", "bitflip", "replay"]))
def test_random_workloads_against_random_attackers(mix: list[Any], work: list[Any], ram: int,
                                                   policy: str, disk: str) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_episode, mix, work, ram, policy, disk, clock=clock)


SET_EXAMPLES = max(1, min(EXAMPLES, int(os.environ.get("CAPKERN_SET_EXAMPLES", "8"))))


async def _set_episode(mix: list[Any], work: list[Any], ram: int, policy: str,
                       mode: str) -> None:
    """The same mixes as members of a pager set: one of a mirror of 3 (2 copies), or
    two of an erasure-coded set of 5 (3 rebuild).  Stronger than above: every process
    finishes with correct data -- the attackers cannot even deny service."""
    from capkern.servers.pager._server import pager_server

    evs = [Evidence(), Evidence()]
    bad = [attack_pager(*_compose(mix), evidence=ev) for ev in evs]
    if mode == "mirror":
        options: dict[str, Any] = {"pagers": (bad[0], pager_server, pager_server),
                                   "copies": 2}
    else:
        options = {"pagers": (*bad, pager_server, pager_server, pager_server),
                   "needed": 3}
    async with capkern.boot(ram_pages=ram, policy=policy, pager_deadline=1.0,
                            pager_set=mode, **options) as k:
        pids = []
        for seed, (prog, pages) in enumerate(work):
            program, *args = PROGRAMS[prog](pages, seed)
            pids.append(k.spawn(program, *args, name=f"{prog}{seed}"))
        statuses = [await k.wait(p) for p in pids]
    assert_no_wrong_reads(statuses)
    assert all(s.ok for s in statuses), [s.error for s in statuses]
    plain = [p for seed, (prog, pages) in enumerate(work)
             for p in page_pattern_for(prog, pages, seed)]
    for ev in evs:
        assert ev.breaches == []
        assert_no_plaintext(ev, plain, require_seen=False)


@settings(max_examples=SET_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mix=attack_mix, work=workload, ram=st.integers(3, 10),
       policy=st.sampled_from(["fifo", "clock", "lru", "random"]),
       mode=st.sampled_from(["mirror", "erasure"]))
def test_pager_sets_against_random_attackers(mix: list[Any], work: list[Any], ram: int,
                                             policy: str, mode: str) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_set_episode, mix, work, ram, policy, mode, clock=clock)
