"""Out-of-contract replies from the untrusted pager never reach the kernel's fault path.

The kernel checks every reply of its servers with the endpoint's contract at the
replier's trap, through the contract's fast test (``Spec.valid``).  An attacking pager
here answers the kernel's ``evict``, ``fetch`` and ``store`` calls with ``ok`` bodies
that are *almost* right -- a bool or a float where a handle goes, a handle out of
range, an extra or an int key, a str where bytes go, the right value one level too deep
-- and must be refused every time: the pager gets ``ContractViolation``, the kernel's
call fails with a typed error at once (not at its deadline), no process reads wrong
data, and the kernel runs on.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import capkern
from capkern import programs
from capkern.errors import CapkernError
from capkern.testing import (
    AttackPager,
    Evidence,
    Tamper,
    assert_no_wrong_reads,
    attack_pager,
    is_typed_fault,
    run_workload,
)

BAD: dict[str, list[Any]] = {
    "evict": [{"victims": [True]}, {"victims": [-1]}, {"victims": [1.0]}, {"victims": "1"},
              {"victims": [1], "more": 1}, {0: [1]}, {}, {"victims": [[1]]},
              {"victims": [2**63]}, {"victims": [2**64]}, None, [1]],
    "fetch": [{"blob": True}, {"blob": "page"}, {"blob": b"", "more": 0}, {0: b""}, [],
              {"blob": [b""]}, {"blob": None}, {"blob": 1}],
    "store": [{"stored": [None]}, {"stored": {}}, {"stored": [False]}, {"stored": [0.5]},
              {"stored": [], "x": 1}, {"stored": b""}],
}


class AlmostRight(Tamper):
    """Answer each ``evict``/``fetch``/``store`` with the next almost-right body."""

    name = "almost-right"

    def __init__(self) -> None:
        self.next = dict.fromkeys(BAD, 0)
        self.accepted: list[tuple[str, Any]] = []

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label not in BAD or self.next[label] >= len(BAD[label]):
            return False
        bad = BAD[label][self.next[label]]
        self.next[label] += 1
        try:
            pager.proc.reply("ok", bad)
        except CapkernError as exc:
            pager.evidence.refused[type(exc).__name__] += 1
            await pager.honest(label, body)  # (too late: the first answer was the one)
        else:
            self.accepted.append((label, bad))
        return True


async def test_almost_right_replies_are_refused_at_once(
        capkern_clock: trio.testing.MockClock) -> None:
    evidence = Evidence()
    tamper = AlmostRight()
    async with capkern.boot(pager=attack_pager(tamper, evidence=evidence), ram_pages=4,
                            pager_deadline=1000.0) as kernel:
        start = trio.current_time()
        statuses = await run_workload(kernel, programs.sequential, 12, 3, seeds=range(6))
        elapsed = trio.current_time() - start
        tried = sum(tamper.next.values())
        assert tamper.next == {label: len(bodies) for label, bodies in BAD.items()}, tamper.next
        assert tamper.accepted == []  # no almost-right body crossed
        # each refused at the pager's trap: out of contract, or (2**64) not encodable
        assert evidence.refused == {"ContractViolation": tried - 1, "UnencodableBody": 1}
        assert kernel.stats.contract_violations >= tried - 1
        assert elapsed < 1.0  # each refusal failed its call at once, not at the deadline
        after = kernel.spawn(programs.sequential, 12, 2, 7)
        assert (await kernel.wait(after)).ok  # the kernel (and the pager) run on
    assert_no_wrong_reads(statuses)
    assert all(s.ok or is_typed_fault(s) for s in statuses), statuses
