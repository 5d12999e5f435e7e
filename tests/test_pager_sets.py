"""Pager sets: a mirror of k copies or an erasure code of n shards over N untrusted
pagers, each with its own block device, where one (mirror) or n-m (erasure) members run
an attacker of the kit and every process still finishes with exactly its own data.

The liar is named (quarantined, an event, its ``ps()`` row), never asked again, and the
honest members carry on; a crashed, hung or slow member is a failure, not a liar.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import capkern
from capkern import programs
from capkern.errors import ConfigError
from capkern.pagerset._port import pager_set
from capkern.testing import (
    BitFlip,
    Crash,
    Drop,
    Evidence,
    Garbage,
    Hang,
    Replay,
    Slow,
    Swap,
    Truncate,
    Zeros,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    expected_pages,
    run_workload,
)

PAGES, ROUNDS, RAM, PROCS = 16, 2, 6, 3
TAMPERS: dict[str, Any] = {
    "bitflip": lambda: BitFlip("any", seed=3),
    "truncate": lambda: Truncate(1),
    "zeros": Zeros,
    "replay": Replay,
    "swap": Swap,
    "drop": Drop,
    "hang": Hang,
    "crash": Crash,
    "garbage": Garbage,
    "slow": lambda: Slow(0.3),
}
LIARS = {"bitflip", "truncate", "zeros", "replay", "swap"}  # integrity failures


def _honest() -> Any:
    return None  # the default pager


async def _run(kernel_factory: Any, members: list[Any], evidence: Evidence | None = None,
               **opts: Any) -> tuple[Any, capkern.Kernel]:
    pagers = [m if m is not None else _default() for m in members]
    opts.setdefault("pager_deadline", 1.0)
    async with kernel_factory(pagers=pagers, ram_pages=RAM, **opts) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
        assert_no_wrong_reads(statuses)
        if evidence is not None:
            plain = [p for s in range(PROCS) for p in expected_pages(s, PAGES, ROUNDS)]
            assert_no_plaintext(evidence, plain)
            assert evidence.breaches == []
        assert kernel.stats.seals > 0
    return statuses, kernel


def _default() -> Any:
    from capkern.servers.pager._server import pager_server

    return pager_server


@pytest.mark.parametrize("name", sorted(TAMPERS))
@pytest.mark.parametrize("copies", [2, 3])
async def test_mirror_survives_one_attacker(name, copies, kernel_factory, capkern_clock):
    evidence = Evidence()
    bad = attack_pager(TAMPERS[name](), evidence=evidence)
    statuses, kernel = await _run(kernel_factory, [bad, None, None], evidence,
                                  pager_set="mirror", copies=copies)
    assert all(s.ok for s in statuses), [s.error for s in statuses]
    pset = pager_set(kernel)
    assert pset is not None and "'pager0'" in pset.members[0].port.name
    info = {d.name: d for d in kernel.domains()}
    if name in LIARS and any(evidence.tried.values()):  # a liar that was asked is named
        assert pset.members[0].quarantined and info["pager0"].quarantined
        assert kernel.events.of_kind("pager_quarantined")
        assert kernel.stats.integrity_faults == 0  # caught before the sealer saw it
    for i in (1, 2):  # honest members are never blamed
        assert not pset.members[i].quarantined and not info[f"pager{i}"].quarantined


@pytest.mark.parametrize("name", sorted(TAMPERS))
async def test_erasure_survives_n_minus_m_attackers(name, kernel_factory, capkern_clock):
    evidence = Evidence()
    members = [attack_pager(TAMPERS[name](), evidence=evidence) for _ in range(2)]
    statuses, kernel = await _run(kernel_factory, [*members, None, None, None], evidence,
                                  pager_set="erasure", needed=3)
    assert all(s.ok for s in statuses), [s.error for s in statuses]
    pset = pager_set(kernel)
    assert pset is not None
    assert not any(pset.members[i].quarantined for i in (2, 3, 4))


async def test_single_attacker_without_a_set_fails_processes(kernel_factory, capkern_clock):
    """The baseline the sets improve on: one tampering pager, processes fault."""
    async with kernel_factory(pager=attack_pager(BitFlip("any", seed=3)), ram_pages=RAM,
                              pager_deadline=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
    assert_no_wrong_reads(statuses)
    assert not all(s.ok for s in statuses)


async def test_tampering_member_is_quarantined_and_not_asked(kernel_factory, capkern_clock):
    evidence = Evidence()
    bad = attack_pager(BitFlip("ciphertext", seed=1), evidence=evidence)
    _statuses, kernel = await _run(kernel_factory, [bad, None, None], pager_set="mirror",
                                  copies=3)
    pset = pager_set(kernel)
    assert pset is not None
    assert evidence.tried["bitflip-ciphertext"] >= 1
    assert pset.members[0].quarantined and pset.members[0].integrity >= 1
    assert pset.status()["quarantines"] == 1
    assert pset.primary != 0  # the policy moved to an honest member
    ev = kernel.events.of_kind("pager_quarantined")
    assert len(ev) == 1 and ev[0].domain == "pager0"
    # the kernel's own check never saw the bad copy: the set caught it first
    assert kernel.stats.integrity_faults == 0


async def test_erasure_names_the_corrupt_shard(kernel_factory, capkern_clock):
    bad = attack_pager(BitFlip("any", seed=5))
    _statuses, kernel = await _run(kernel_factory, [None, None, bad, None, None],
                                  pager_set="erasure", needed=3)
    pset = pager_set(kernel)
    assert pset is not None and pset.code is not None
    assert [m.quarantined for m in pset.members] == [False, False, True, False, False]
    assert pset.overhead()["code"] < 1.8 and pset.overhead()["disk"] == 5.0


async def test_all_copies_bad_is_a_typed_fault(kernel_factory, capkern_clock):
    """A mirror of 2 where both holders lie: the page is refused, never wrong data."""
    bad = [attack_pager(BitFlip("any", seed=s)) for s in (1, 2)]
    async with kernel_factory(pagers=bad, pager_set="mirror", copies=2, ram_pages=RAM,
                              pager_deadline=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
    assert_no_wrong_reads(statuses)
    assert not all(s.ok for s in statuses)


async def test_replacement_rejoins_and_is_refilled(kernel_factory, capkern_clock):
    """After a quarantine, rejoin(): the next store of each page goes to it again."""
    bad = attack_pager(Swap())
    async with kernel_factory(pagers=[bad, _default(), _default()], pager_set="mirror",
                              copies=3, ram_pages=RAM, pager_deadline=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
        assert all(s.ok for s in statuses)
        pset = pager_set(kernel)
        assert pset is not None
        assert pset.members[0].quarantined  # the swap was caught
        spy = _Spy(pset.members[1].port)  # an honest pager in its place
        pset.rejoin(0, spy)
        assert not pset.members[0].quarantined
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
        assert all(s.ok for s in statuses)
        assert spy.labels["store"] > 0 and spy.labels["fetch"] > 0


class _Spy:
    """A member port that counts the calls it passes on."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.name = "spy"
        self.labels: Counter[str] = Counter()

    async def call(self, label: str, body: Any, deadline: float) -> Any:
        self.labels[label] += 1
        return await self.port.call(label, body, deadline)


@pytest.mark.parametrize("opts", [
    {"pagers": []}, {"pagers": ["nope"]}, {"pagers": [_honest]},
    {"pagers": [None, None], "copies": 3},
    {"pagers": [None, None], "pager_set": "raid"},
    {"pagers": [None, None], "pager_set": "erasure"},
    {"pagers": [None, None], "pager_set": "erasure", "needed": 3},
    {"pagers": [None, None], "hedge_delay": 0},
])
async def test_bad_pager_set_options_are_config_errors(opts, kernel_factory):
    if opts.get("pagers") and opts["pagers"][0] is None:
        opts = {**opts, "pagers": [_default() for _ in opts["pagers"]]}
    if opts.get("pagers") == [_honest]:
        opts = {**opts, "pager": _default()}
    with pytest.raises(ConfigError):
        async with kernel_factory(**opts):
            pass  # pragma: no cover


async def test_members_run_in_their_own_processes(kernel_factory):
    """isolation="process": each member pager and each member's block device is a
    child OS process of its own; a tampering member is still caught and quarantined."""
    bad = attack_pager(BitFlip("any", seed=3))
    # real time here (child processes): a mirrored store returns once one copy is
    # confirmed plus one hedge of grace for the other; on a loaded machine 50 ms could
    # leave a page's only copy with the liar (then lost: denied, never wrong), about
    # once in 60-85 runs.  A longer grace keeps this test about quarantine.
    async with kernel_factory(pagers=[bad, _default(), _default()], pager_set="mirror",
                              copies=2, isolation="process", ram_pages=RAM,
                              hedge_delay=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, ROUNDS,
                                      seeds=range(PROCS))
        info = {d.name: d for d in kernel.domains()}
    assert all(s.ok for s in statuses), [s.error for s in statuses]
    servers = [f"{role}{i}" for role in ("pager", "blockdev") for i in range(3)]
    pids = {info[name].os_pid for name in servers}
    assert all(info[name].isolation == "process" for name in servers)
    assert len(pids) == 6 and None not in pids
    assert info["pager0"].quarantined and not info["pager1"].quarantined
