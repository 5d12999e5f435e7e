"""Reproducible runs: ``boot(seed=...)`` derives page handles (and so every policy
choice that depends on them) from the seed -- while the boot id and keys stay random --
and options that change fault counts are warned about."""

from __future__ import annotations

import pytest

import capkern
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.lab import make_workload, simulate

REFS = make_workload("uniform:n=300,pages=24", seed=3)


async def run(seed: int | None) -> tuple[int, set[int], bytes]:
    handles: set[int] = set()

    async def sweep(proc: Process) -> None:
        base = proc.mmap(24 * PAGE_SIZE)
        await proc.access([base + p * PAGE_SIZE for p in REFS])
        assert k.vm is not None
        handles.update(k.vm.res.handles)  # the test looks at the kernel's table

    async with capkern.boot(ram_pages=6, evict_batch=1, policy="random", seed=seed) as k:
        assert (await k.wait(k.spawn(sweep))).ok
        assert k.vm is not None and len(handles) == 24
        return k.stats.faults, handles, k.vm.boot_id


async def test_same_seed_same_counts_and_handles() -> None:
    runs = [await run(11) for _ in range(3)]
    assert len({r[0] for r in runs}) == 1
    assert runs[0][1] == runs[1][1] == runs[2][1]
    assert len({r[2] for r in runs}) == 3  # the boot id (key binding) is still fresh


async def test_unseeded_handles_differ_per_boot() -> None:
    a, b = await run(None), await run(None)
    assert a[1] and not a[1] & b[1]


async def test_the_seed_changes_the_random_policy_choices() -> None:
    counts = {(await run(seed))[0] for seed in range(6)}
    assert len(counts) > 1


async def test_seeded_random_policy_in_the_simulator() -> None:
    counts = [(await simulate(REFS, "random", 5, seed=4)).faults for _ in range(3)]
    assert len(set(counts)) == 1


def test_workloads_are_seeded() -> None:
    assert make_workload("heavy:n=500", 1) == make_workload("heavy:n=500", 1)
    assert make_workload("heavy:n=500", 1) != make_workload("heavy:n=500", 2)


async def test_a_batch_larger_than_ram_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="evict_batch"):
        async with capkern.boot(ram_pages=2, evict_batch=4):
            pass


async def test_simulating_with_a_batch_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="textbook"):
        got = await simulate([1, 2, 3, 4, 2], "fifo", 3, evict_batch=2)
    assert (got.faults, (await simulate([1, 2, 3, 4, 2], "fifo", 3)).faults) == (5, 4)


async def test_bad_seed_and_precise_are_config_errors() -> None:
    for bad in ({"seed": "7"}, {"seed": 1.5}, {"precise": 1}):
        with pytest.raises(capkern.ConfigError):
            async with capkern.boot(**bad):
                pass
