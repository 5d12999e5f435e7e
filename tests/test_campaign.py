"""Property-based adversarial campaign.

Hypothesis draws a multi-process workload (programs, working-set sizes, RAM pressure,
replacement policy) and a mix of attackers composed over an honest pager (each tamper
wrapped in Sometimes/After), runs it on an autojump clock and checks:

* zero wrong reads: every program verifies every read against the last value it wrote,
  so each process either exits 0 or fails with a typed capkern Fault;
* no plaintext window of any page reached the attacker;
* no confinement breach was recorded;
* the kernel is alive: an IPC-only client that never needs the pager finished
  correctly while the attack ran, and a fresh call after the workload succeeds.

CI runs a bounded number of examples; for a long campaign set
``CAPKERN_CAMPAIGN_EXAMPLES`` (e.g. ``CAPKERN_CAMPAIGN_EXAMPLES=2000 pytest
tests/test_campaign.py``).
"""

from __future__ import annotations

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
    BitFlip,
    Crash,
    Drop,
    Evidence,
    Extend,
    ForgeCaps,
    Garbage,
    Hang,
    Misdirect,
    Replay,
    ReuseReply,
    Sometimes,
    Swap,
    Tamper,
    Truncate,
    WrongLabel,
    Zeros,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    page_pattern_for,
)

EXAMPLES = int(os.environ.get("CAPKERN_CAMPAIGN_EXAMPLES", "25"))

TAMPERS: dict[str, Callable[[int], Tamper]] = {
    "bitflip": lambda s: BitFlip("any", seed=s), "truncate": lambda s: Truncate(1 + s % 9),
    "extend": lambda s: Extend(b"x" * (1 + s % 5)), "replay": lambda s: Replay(),
    "swap": lambda s: Swap(), "misdirect": lambda s: Misdirect(), "zeros": lambda s: Zeros(),
    "drop": lambda s: Drop(), "hang": lambda s: Hang(), "crash": lambda s: Crash(),
    "garbage": lambda s: Garbage(), "wrong-label": lambda s: WrongLabel(),
    "forge": lambda s: ForgeCaps(), "reuse": lambda s: ReuseReply(),
}
PROGRAMS: dict[str, Callable[[int, int], tuple[Any, ...]]] = {
    "sequential": lambda pages, seed: (programs.sequential, pages, 2, seed),
    "random": lambda pages, seed: (programs.random_ws, pages, 3 * pages, seed),
    "zipf": lambda pages, seed: (programs.zipf, pages, 3 * pages, 1.1, seed),
    "phased": lambda pages, seed: (programs.phased, pages, 3, seed),
}

attack_mix = st.lists(
    st.tuples(st.sampled_from(sorted(TAMPERS)), st.integers(0, 1000),
              st.sampled_from(["sometimes", "after"]), st.floats(0.05, 0.5)),
    min_size=1, max_size=3)
workload = st.lists(st.tuples(st.sampled_from(sorted(PROGRAMS)), st.integers(6, 20)),
                    min_size=1, max_size=3)


def _compose(mix: list[tuple[str, int, str, float]]) -> list[Tamper]:
    out: list[Tamper] = []
    for name, seed, how, p in mix:
        tamper = TAMPERS[name](seed)
        out.append(Sometimes(tamper, p, seed) if how == "sometimes"
                   else After(tamper, int(p * 100)))
    return out


async def _episode(mix: list[Any], work: list[Any], ram: int, policy: str) -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=ram, policy=policy, pager_deadline=1.0,
                            pager=attack_pager(*_compose(mix), evidence=ev)) as k:
        ep = k.new_endpoint("echo")
        k.spawn(programs.echo_server, caps={"service": capkern.Grant(ep, "r")})
        bystander = k.spawn(programs.echo_client, 50,
                            caps={"server": capkern.Grant(ep, "w")})
        pids = []
        for seed, (prog, pages) in enumerate(work):
            program, *args = PROGRAMS[prog](pages, seed)
            pids.append(k.spawn(program, *args, name=f"{prog}{seed}"))
        statuses = [await k.wait(p) for p in pids]
        assert (await k.wait(bystander)).ok
        after = k.spawn(programs.echo_client, 3, caps={"server": capkern.Grant(ep, "w")})
        assert (await k.wait(after)).ok  # the kernel and IPC still work
    assert_no_wrong_reads(statuses)
    assert ev.breaches == []
    plain = [page_pattern_for(prog, pages, seed) for seed, (prog, pages) in enumerate(work)]
    assert_no_plaintext(ev, [p for pages in plain for p in pages])


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mix=attack_mix, work=workload, ram=st.integers(3, 10),
       policy=st.sampled_from(["fifo", "clock", "lru", "random"]))
def test_random_workloads_against_random_attackers(mix: list[Any], work: list[Any], ram: int,
                                                   policy: str) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(_episode, mix, work, ram, policy, clock=clock)
