"""Precise mode (every reference reported in order), the oracle's next uses (offline
only) and the batched access syscall, checked through a real boot with a pager that
records what it hears."""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import _serverloop as serverloop
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.errors import ConfigError, ProtectionFault, SegmentationFault, ServerError
from capkern.lab import simulate
from capkern.servers.pager import FIFOPolicy, LFUPolicy, LRUPolicy, Pager, make_pager


def spy(heard: list[tuple[str, Any]], policy: type = FIFOPolicy) -> Any:
    """A pager that records every evict/observe/discard body it is sent."""

    class Spy(Pager):
        def handlers(self) -> serverloop.Table:
            async def record(label: str, handler: serverloop.Handler, body: Any) -> Any:
                if label in ("evict", "observe", "discard"):
                    heard.append((label, body))
                return await handler(body)

            return serverloop.around(super().handlers(), record)

    return make_pager(policy, cls=Spy)


def lfu_reference(refs: list[int], frames: int) -> int:
    """LFU by the book: fewest references since arrival; ties to the least recent."""
    count: dict[int, int] = {}
    last: dict[int, int] = {}
    faults = 0
    for t, page in enumerate(refs):
        if page not in count:
            faults += 1
            if len(count) == frames:
                victim = min(count, key=lambda p: (count[p], last[p]))
                del count[victim], last[victim]
            count[page] = 0
        count[page] += 1
        last[page] = t
    return faults


async def run(program: Any, *args: Any, **boot: Any) -> list[tuple[str, Any]]:
    heard: list[tuple[str, Any]] = []
    boot.setdefault("pager", spy(heard))
    async with capkern.boot(evict_batch=1, **boot) as kernel:
        status = await kernel.wait(kernel.spawn(program, *args))
        assert status.ok, status
    return heard


async def touch_all(proc: Process, pages: list[int], future: bool = False) -> None:
    base = proc.mmap(16 * PAGE_SIZE)
    await proc.access([base + p * PAGE_SIZE for p in pages], future=future)


async def test_normal_boot_reports_bits_not_order_and_never_the_future() -> None:
    pages = [0, 1, 0, 0, 2, 3, 0]
    heard = await run(touch_all, pages, ram_pages=2)
    evicts = [b for label, b in heard if label == "evict"]
    assert evicts and all("next_use" not in b for b in evicts)
    assert all(len(b["referenced"]) == len(set(b["referenced"])) for b in evicts)


async def test_precise_boot_reports_every_reference_in_order() -> None:
    pages = [0, 1, 0, 0, 2, 3, 0, 1]
    heard = await run(touch_all, pages, ram_pages=2, precise=True)
    refs = [h for label, b in heard if label in ("evict", "observe") for h in b["referenced"]]
    assert all("next_use" not in b for _, b in heard)
    # the references before the last eviction, as handles: same pattern as the pages
    first: dict[int, int] = {}
    pattern = [first.setdefault(h, len(first)) for h in refs]
    expect: dict[int, int] = {}
    assert pattern == [expect.setdefault(p, len(expect)) for p in pages[: len(refs)]]
    assert len(refs) == 7  # all but the last reference, made after the last eviction


async def test_oracle_next_uses_are_positions_of_the_next_reference() -> None:
    pages = [0, 1, 0, 2, 1, 3]
    heard = await run(touch_all, pages, True, ram_pages=2, precise=True)
    bodies = [b for label, b in heard if label == "evict"]
    positions = [p for b in bodies for p in b["next_use"]]
    never = (1 << 63) - 1
    expected = [2, 4, never, never, never, never]
    assert positions == expected[: len(positions)] and len(positions) >= 4


async def test_future_needs_a_precise_boot() -> None:
    async def program(proc: Process) -> None:
        base = proc.mmap(PAGE_SIZE)
        with pytest.raises(ConfigError):
            await proc.access([base], future=True)

    await run(program, ram_pages=2)


async def test_long_logs_are_flushed_before_they_outgrow_a_message() -> None:
    async def program(proc: Process) -> None:
        base = proc.mmap(2 * PAGE_SIZE)
        await proc.access([base] * 70_000)
        await proc.access([base + PAGE_SIZE])  # needs the frame: an eviction

    heard = await run(program, ram_pages=1, precise=True)
    observes = [b for label, b in heard if label == "observe"]
    assert observes and max(len(b["referenced"]) for b in observes) <= 1 << 16
    assert sum(len(b["referenced"]) for _, b in heard if "referenced" in b) == 70_000


async def test_discarded_pages_are_never_reported_again() -> None:
    async def program(proc: Process) -> None:
        base = proc.mmap(4 * PAGE_SIZE)
        await proc.access([base, base + PAGE_SIZE, base])
        proc.munmap(base, PAGE_SIZE)
        await proc.access([base + 2 * PAGE_SIZE, base + 3 * PAGE_SIZE, base + PAGE_SIZE])

    heard = await run(program, ram_pages=2, precise=True)
    gone = {h for label, b in heard if label == "discard" for h in b["handles"]}
    assert gone
    after = heard[[label for label, _ in heard].index("discard") + 1:]
    for _label, body in after:
        assert not gone & set(body.get("referenced", []) + body.get("mapped", []))


@pytest.mark.parametrize("seed", range(3))
async def test_lfu_is_exact_in_precise_mode(seed: int) -> None:
    import random

    rng = random.Random(seed)
    refs = [min(int(rng.paretovariate(1.2)), 9) for _ in range(80)]
    for frames in (1, 2, 3, 4):
        assert (await simulate(refs, LFUPolicy, frames)).faults == lfu_reference(refs, frames)


async def test_lru_is_exact_only_in_precise_mode() -> None:
    refs = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]  # Belady's string, 3 frames: LRU 10

    async def program(proc: Process) -> None:
        base = proc.mmap(8 * PAGE_SIZE)
        for p in refs:
            await proc.read(base + p * PAGE_SIZE, 1)

    async def faults(precise: bool, seed: int | None) -> int:
        async with capkern.boot(ram_pages=3, evict_batch=1, precise=precise, seed=seed,
                                pager=make_pager(LRUPolicy)) as kernel:
            assert (await kernel.wait(kernel.spawn(program))).ok
            return kernel.stats.faults

    assert await faults(True, None) == 10
    # harvested bits only: pages touched between two evictions look equally recent (the
    # kernel reports them in a shuffled order), so the count is LRU's only by chance --
    # though on a seeded boot it is the same run after run
    counts = {seed: await faults(False, seed) for seed in range(6)}
    for seed in range(6):
        assert await faults(False, seed) == counts[seed]
    assert set(counts.values()) != {10}


async def test_access_checks_its_arguments() -> None:
    async def program(proc: Process) -> None:
        base = proc.mmap(2 * PAGE_SIZE)
        ro = proc.mmap(PAGE_SIZE, "r")
        for bad in ("abc", [base, -1], [base, 1.5], [True]):
            with pytest.raises(ConfigError):
                await proc.access(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            await proc.access([base], count=2)
        with pytest.raises(SegmentationFault):
            await proc.access([base, base + 64 * PAGE_SIZE])
        with pytest.raises(ProtectionFault):
            await proc.access([ro], write=True)
        assert await proc.access([base, base, ro]) == b"\x01\x01\x00"  # base faulted above

    await run(program, ram_pages=4)


async def test_a_report_the_pager_refused_is_reported_again() -> None:
    heard: list[tuple[str, Any]] = []

    class FailsOnce(Pager):
        failed = False

        def handlers(self) -> serverloop.Table:
            async def fail_once(label: str, handler: serverloop.Handler, body: Any) -> Any:
                if label == "evict":
                    heard.append((label, body))
                    if not FailsOnce.failed:
                        FailsOnce.failed = True
                        raise ServerError("io", "transient")
                return await handler(body)

            return serverloop.around(super().handlers(), fail_once)

    async def program(proc: Process) -> None:
        base = proc.mmap(6 * PAGE_SIZE)
        for p in range(6):
            await proc.write(base + p * PAGE_SIZE, bytes([p + 1]))
        for p in range(6):
            assert await proc.read(base + p * PAGE_SIZE, 1) == bytes([p + 1])

    async with capkern.boot(ram_pages=2, evict_batch=1, precise=True,
                            pager=make_pager(FIFOPolicy, cls=FailsOnce)) as kernel:
        assert (await kernel.wait(kernel.spawn(program))).ok
    first, second = heard[0][1], heard[1][1]
    assert first["mapped"] and set(first["mapped"]) <= set(second["mapped"])
