"""Prototyping a replacement policy: a user's policy plugged into the real pager, end to
end through sealed paging, and a bad policy that costs speed but never correctness."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
import trio

import capkern
from capkern import programs
from capkern.servers.pager import (
    FIFOPolicy,
    ReplacementPolicy,
    make_pager,
)


class MRUPolicy(ReplacementPolicy):
    """Evict the most recently admitted or referenced page (good for sequential scans)."""

    name = "mru"

    def __init__(self) -> None:
        self.order: dict[int, None] = {}
        self.choose_calls = 0
        self.referenced_seen = 0

    def admit(self, handle: int) -> None:
        self.order.pop(handle, None)
        self.order[handle] = None

    def remove(self, handle: int) -> None:
        self.order.pop(handle, None)

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self.order:
                self.referenced_seen += 1
                self.admit(h)

    def choose(self, n: int) -> list[int]:
        self.choose_calls += 1
        return list(reversed(self.order))[:n]

    def __contains__(self, handle: object) -> bool:
        return handle in self.order

    def __len__(self) -> int:
        return len(self.order)


class LiarPolicy(ReplacementPolicy):
    """Names pages that do not exist, repeats itself, and never forgets anything."""

    name = "liar"

    def __init__(self) -> None:
        self.rng = random.Random(7)
        self.choose_calls = 0

    def admit(self, handle: int) -> None:
        pass

    def remove(self, handle: int) -> None:
        pass

    def choose(self, n: int) -> list[int]:
        self.choose_calls += 1
        bogus = self.rng.randrange(1, 1 << 63)
        return [bogus] * n

    def __contains__(self, handle: object) -> bool:
        return False

    def __len__(self) -> int:
        return 0


async def _run_scan(kernel: capkern.Kernel, procs: int = 2) -> list[capkern.ExitStatus]:
    pids = [kernel.spawn(programs.sequential, 24, 3, seed, name=f"scan{seed}")
            for seed in range(procs)]
    return [await kernel.wait(p) for p in pids]


async def test_user_policy_drives_eviction() -> None:
    policy = MRUPolicy()
    async with capkern.boot(ram_pages=8, pager=make_pager(policy)) as kernel:
        statuses = await _run_scan(kernel)
        assert all(s.ok for s in statuses), statuses
        assert kernel.vm is not None
        pager_stats = (await kernel.vm.server_stats())["pager"]
    assert policy.choose_calls > 0 and policy.referenced_seen > 0
    assert pager_stats["policy"] == "mru"
    assert kernel.stats.evictions > 0 and kernel.stats.integrity_faults == 0


async def test_policy_factory_gives_the_pager_a_fresh_policy() -> None:
    made: list[MRUPolicy] = []

    def factory() -> MRUPolicy:
        made.append(MRUPolicy())
        return made[-1]

    async with capkern.boot(ram_pages=8, pager=make_pager(factory)) as kernel:
        assert all(s.ok for s in await _run_scan(kernel, procs=1))
    assert len(made) == 1 and made[0].choose_calls > 0


async def test_policy_choice_changes_the_fault_count() -> None:
    """A cyclic scan one page larger than RAM: FIFO faults on every touch, MRU does not.
    The policy really decides: the two runs differ only in the pager's policy."""

    async def faults(policy: ReplacementPolicy) -> int:
        async with capkern.boot(ram_pages=8, evict_batch=1, pager=make_pager(policy)) as k:
            status = await k.wait(k.spawn(programs.sequential, 9, 6, 3))
            assert status.ok, status
            return k.stats.page_ins

    fifo, mru = await faults(FIFOPolicy()), await faults(MRUPolicy())
    assert mru < fifo, (mru, fifo)


async def test_lying_policy_costs_speed_not_correctness() -> None:
    policy = LiarPolicy()
    async with capkern.boot(ram_pages=6, pager=make_pager(policy)) as kernel:
        statuses = await _run_scan(kernel)
        assert all(s.ok for s in statuses), statuses
    assert policy.choose_calls > 0
    assert kernel.stats.evictions > 0 and kernel.stats.integrity_faults == 0


async def test_empty_user_policy_is_not_replaced_by_the_default() -> None:
    """Regression: ``policy or default`` dropped a user's policy while it held no pages."""
    policy = MRUPolicy()
    assert len(policy) == 0
    async with capkern.boot(ram_pages=8, policy="fifo", pager=make_pager(policy)) as kernel:
        assert all(s.ok for s in await _run_scan(kernel, procs=1))
    assert policy.choose_calls > 0


@pytest.mark.parametrize("name", ["bogus", "", "CLOCK"])
async def test_unknown_policy_name_is_refused_at_boot(name: str) -> None:
    with pytest.raises(capkern.ConfigError, match="fifo, clock, lru, random"):
        async with capkern.boot(policy=name):
            raise AssertionError("booted with an unknown policy")  # pragma: no cover


async def test_custom_pager_is_not_held_to_the_default_policy_names() -> None:
    async with capkern.boot(ram_pages=8, policy="mru", pager=make_pager(MRUPolicy)) as kernel:
        assert all(s.ok for s in await _run_scan(kernel, procs=1))


async def test_a_pager_dead_at_start_gives_a_clear_out_of_memory(
        autojump_clock: trio.abc.Clock) -> None:
    async def broken_pager(proc: capkern.Process, policy_name: str) -> None:
        raise RuntimeError("pager could not start")

    async with capkern.boot(ram_pages=4, pager=broken_pager) as kernel:
        status = await kernel.wait(kernel.spawn(programs.sequential, 10, 1, 0))
    assert not status.ok and status.error is not None
    assert "OutOfMemory" in status.error and "could not be stored" in status.error
