"""``capkern demo``, part 4: pager sets where one member (or n-m) is malicious.

For each attacker of the kit the same workload runs three times: with the attacker as
the only pager (it can deny service: processes fail with typed faults), in a mirror of 3
pagers keeping 2 copies of each page with the attacker as one member, and in an
erasure-coded set of 5 (any 3 shards rebuild a page) with the attacker as 2 members.
Every row of the sets should read ``ok 3/3``: the kernel noticed the liar (its copy
fails the digest, its shard fails its tag), quarantined it and asked an honest member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing
from rich import box
from rich.table import Table

from . import programs
from ._root import boot
from .pagerset._port import pager_set
from .testing import _attackers as atk
from .testing._assertions import is_typed_fault

__all__ = ["SetRow", "pager_set_rows", "pager_set_table"]

PROCS, PAGES, RAM = 3, 24, 16


def set_attacks(quick: bool) -> list[tuple[str, Callable[[], atk.Tamper]]]:
    """The attackers a set must survive: tamper, replay, swap, drop, hang, crash,
    garbage, slow."""
    mix: list[tuple[str, Callable[[], atk.Tamper]]] = [
        ("bit-flip", lambda: atk.BitFlip("any", seed=1)),
        ("replay", lambda: atk.Replay()),
        ("swap pages", lambda: atk.Swap()),
        ("zeros", lambda: atk.Zeros()),
        ("drop", lambda: atk.Drop()),
        ("hang", lambda: atk.Hang()),
        ("crash", lambda: atk.Crash()),
        ("garbage", lambda: atk.Garbage()),
        ("slow", lambda: atk.Slow(0.2)),
    ]
    return mix[::2] if quick else mix


@dataclass
class SetRow:
    """One attacker: processes ok (of PROCS) alone, in a mirror, in an erasure set."""

    name: str
    single: int
    mirror: int
    erasure: int
    quarantined: int  # members quarantined over both sets
    wrong_reads: int  # reads of wrong data over all three runs (must be 0)
    procs: int = PROCS


async def _run(make: Callable[[], atk.Tamper], mode: str | None) -> tuple[int, int, int]:
    honest = _honest_pager()
    options: dict[str, Any]
    if mode is None:
        options = {"pager": atk.attack_pager(make())}
    elif mode == "mirror":
        options = {"pagers": (atk.attack_pager(make()), honest, honest),
                   "pager_set": "mirror", "copies": 2}
    else:
        options = {"pagers": (atk.attack_pager(make()), atk.attack_pager(make()),
                              honest, honest, honest), "pager_set": "erasure", "needed": 3}
    async with boot(ram_pages=RAM, pager_deadline=1.0, **options) as kernel:
        pids = [kernel.spawn(programs.sequential, PAGES, 2, seed, name=f"ws{seed}")
                for seed in range(PROCS)]
        statuses = [await kernel.wait(p) for p in pids]
        pset = pager_set(kernel)
        quarantined = sum(m.quarantined for m in pset.members) if pset else 0
    wrong = sum(1 for s in statuses if (s.state == "exited" and s.code)
                or (s.state == "failed" and not is_typed_fault(s)))
    return sum(1 for s in statuses if s.ok), quarantined, wrong


def _honest_pager() -> Any:
    import importlib

    return importlib.import_module("capkern.servers.pager").pager_server


def pager_set_rows(quick: bool) -> list[SetRow]:
    """Run every attacker alone and in both sets (virtual time: hangs cost nothing)."""
    rows = []
    for name, make in set_attacks(quick):
        results = [trio.run(_run, make, mode, clock=trio.testing.MockClock(autojump_threshold=0))
                   for mode in (None, "mirror", "erasure")]
        rows.append(SetRow(name, results[0][0], results[1][0], results[2][0],
                           results[1][1] + results[2][1], sum(r[2] for r in results)))
    return rows


def pager_set_table(rows: list[SetRow]) -> Table:
    table = Table(title="4. Pager sets: a malicious member cannot even deny service",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False)
    for col in ("attacker", "alone", "mirror 2 of 3", "erasure 3 of 5", "quarantined",
                "wrong"):
        table.add_column(col, justify="left" if col == "attacker" else "right",
                         no_wrap=True)
    for r in rows:
        table.add_row(r.name, f"{r.single}/{PROCS}", f"{r.mirror}/{PROCS}",
                      f"{r.erasure}/{PROCS}", str(r.quarantined), str(r.wrong_reads))
    table.caption = ("alone: the attacker is the only pager; mirror: 1 of 3 members, 2 "
                     "copies; erasure: 2 of 5 members, any 3 shards rebuild a page")
    return table
