"""Frame allocation across processes on a precise boot: the pager hears opaque space
tags (never pids) and whose fault an eviction serves, so local replacement, working
set and page-fault frequency work -- checked with processes competing on a real kernel."""

from __future__ import annotations

from typing import Any

import capkern
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.lab import run_sim, simulate
from capkern.lab._workloads import parse_refs
from capkern.servers.pager import FIFOPolicy, Pager, make_pager


def interleave(turns: int, small: list[int], scan: int, run: int) -> list[tuple[int, int]]:
    """Process 1 loops over ``small`` pages; process 2 scans ``scan`` pages, ``run`` at a
    time; they alternate."""
    refs: list[tuple[int, int]] = []
    nxt = 0
    for _ in range(turns):
        refs += [(1, p) for p in small]
        for _ in range(run):
            refs.append((2, nxt % scan))
            nxt += 1
    return refs


def _evict_spy(heard: list[dict[str, Any]]) -> Any:
    """A FIFO pager that records every evict request it is sent."""

    class Spy(Pager):
        async def on_evict(self, body: Any) -> Any:
            heard.append(body)
            return await super().on_evict(body)

    return make_pager(FIFOPolicy, cls=Spy)


async def test_the_pager_hears_space_tags_not_pids() -> None:
    heard: list[dict[str, Any]] = []

    async def prog(proc: Process) -> None:
        base = proc.mmap(4 * PAGE_SIZE)
        await proc.access([base + p * PAGE_SIZE for p in (0, 1, 2, 3, 0)])

    async with capkern.boot(ram_pages=3, evict_batch=1, precise=True,
                            pager=_evict_spy(heard)) as kernel:
        a, b = kernel.spawn(prog), kernel.spawn(prog)
        assert (await kernel.wait(a)).ok and (await kernel.wait(b)).ok
    tags = {t for body in heard for t in body["spaces"]} | {body["for"] for body in heard}
    assert len(tags) == 2 and not tags & {a, b, 0, 1, 2}
    mapped = [h for body in heard for h in body["mapped"]]
    spaces = [t for body in heard for t in body["spaces"]]
    assert len(mapped) == len(spaces)


async def test_a_normal_boot_sends_no_space_tags() -> None:
    heard: list[dict[str, Any]] = []

    async def prog(proc: Process) -> None:
        base = proc.mmap(4 * PAGE_SIZE)
        await proc.access([base + p * PAGE_SIZE for p in (0, 1, 2, 3)])

    async with capkern.boot(ram_pages=2, evict_batch=1,
                            pager=_evict_spy(heard)) as kernel:
        assert (await kernel.wait(kernel.spawn(prog))).ok
    assert heard and all("spaces" not in b and "for" not in b for b in heard)


def test_local_replacement_and_working_set_protect_a_small_loop_from_a_scan() -> None:
    refs = interleave(turns=12, small=[0, 1, 2], scan=40, run=6)
    glob = run_sim(refs, "lru", 8, seed=1)
    local = run_sim(refs, "local-lru", 8, seed=1)
    ws = run_sim(refs, "ws:4", 8, seed=1)
    assert glob.per_process[1] > 3 * 4  # global LRU: the scan steals the loop's frames
    assert local.per_process[1] == 3  # only its cold misses
    assert ws.per_process[1] == 3
    assert local.per_process[2] == ws.per_process[2] == 12 * 6  # a scan misses anyway


def test_pff_grows_a_process_that_faults_often() -> None:
    # process 2 takes 4 frames, then process 1 loops over 6 pages on 6 frames
    refs = [(2, p) for p in range(4)] + [(1, p % 6) for p in range(60)] + [(2, 0)]
    pff = run_sim(refs, "pff:10", 6, seed=2)
    local = run_sim(refs, "local-lru", 6, seed=2)
    assert pff.per_process[1] < 20 < local.per_process[1]
    assert pff.faults == pff.kernel["faults"]


async def test_multi_process_trace_text_and_bad_mixes() -> None:
    refs = parse_refs("1:0 2:0 1:1 2:1 1:0")
    assert refs == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 0)]
    got = await simulate(refs, "fifo", 4)
    assert got.faults == 4 and got.per_process == {1: 2, 2: 2}
    import pytest

    with pytest.raises(capkern.ConfigError):
        parse_refs("1:0 2")
    with pytest.raises(capkern.ConfigError):
        await simulate(refs, "opt", 4)  # OPT's future is one trap's: single process only
