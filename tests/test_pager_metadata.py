"""The pager learns no more than it must: discard batches are pooled across processes,
drawn at random and capped in size; lists that are sets (referenced, dirty) go out
shuffled.  Only ``mapped`` keeps its order (FIFO needs it)."""

from __future__ import annotations

from typing import Any

import trio

import capkern
from capkern import programs
from capkern._pagefmt import PAGE_SIZE
from capkern.mmu._discards import DISCARD_BATCH, DiscardPool, shuffled
from capkern.testing import Evidence, Snoop, attack_pager


async def _writer(proc: capkern.Process, pages: int, stay: bool) -> None:
    base = proc.mmap(pages * PAGE_SIZE)
    for i in range(pages):
        await proc.write(base + i * PAGE_SIZE, bytes([i + 1]) * 64)
    if stay:
        await trio.sleep_forever()


def _owners(kernel: capkern.Kernel, pids: list[int]) -> dict[int, int]:
    """handle -> pid, from the kernel's own (trusted) table."""
    assert kernel.vm is not None
    spaces = {id(kernel._domain(p).aspace): p for p in pids}
    return {h: spaces[id(pte.aspace)] for h, pte in kernel.vm.res.handles.items()}


async def test_exit_discards_reveal_no_address_order(capkern_clock: Any) -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=8, pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        assert (await kernel.wait(kernel.spawn(_writer, 40, False))).ok
        await trio.sleep(1)
    batches = ev.discard_batches()
    sent = [h for batch in batches for h in batch]
    assert len(sent) == len(set(sent)) == 40
    assert max(len(b) for b in batches) <= DISCARD_BATCH
    in_address_order = [h for h in ev.mapped_order() if h in set(sent)]
    assert len(in_address_order) >= 32  # the pager did hear of (almost) all of them
    assert [h for h in sent if h in set(in_address_order)] != in_address_order


async def test_discards_of_processes_that_end_together_are_mixed(capkern_clock: Any) -> None:
    ev = Evidence()
    async with capkern.boot(ram_pages=64, pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        pids = [kernel.spawn(_writer, 20, True) for _ in range(2)]
        await trio.sleep(1)
        owners = _owners(kernel, pids)
        for pid in pids:
            kernel.kill(pid)
        for pid in pids:
            await kernel.wait(pid)
        await trio.sleep(1)
    batches = ev.discard_batches()
    groups = [{h for h, p in owners.items() if p == pid} for pid in pids]
    assert sorted(len(g) for g in groups) == [20, 20]
    assert sorted(h for b in batches for h in b) == sorted(owners)
    for batch in batches:
        assert set(batch) not in groups  # no batch is one process's set of pages
    assert {owners[h] for h in batches[0]} == set(pids)  # the first one mixes both


async def _hot_and_cold(proc: capkern.Process, hot: int, rounds: int) -> None:
    """Each round writes every page of a hot set, then one new page (a fault)."""
    base = proc.mmap((hot + rounds) * PAGE_SIZE)
    for r in range(rounds):
        for i in range(hot):
            await proc.write(base + i * PAGE_SIZE, bytes([r + 1]) * 8)
        await proc.write(base + (hot + r) * PAGE_SIZE, b"cold")


async def test_referenced_and_dirty_reports_are_shuffled(capkern_clock: Any) -> None:
    # the kernel reports changes since the pager last heard: pages referenced and
    # newly dirtied meanwhile, so each report here holds the hot set (in random order)
    ev = Evidence()
    async with capkern.boot(ram_pages=16, evict_batch=2, policy="fifo",
                            pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        assert (await kernel.wait(kernel.spawn(_hot_and_cold, 10, 24))).ok
    rank = {h: i for i, h in enumerate(ev.mapped_order())}
    reports = [body for label, body in ev.metadata if label == "evict"]
    lists = [[rank[h] for h in body[key] if h in rank] for body in reports
             for key in ("dirty", "referenced")]
    long_lists = [ranks for ranks in lists if len(ranks) >= 6]
    assert len(long_lists) >= 5
    assert any(ranks != sorted(ranks) for ranks in long_lists)
    assert not all(ranks == sorted(ranks) for ranks in long_lists)
    # mapped keeps mapping order: FIFO depends on it (a scan maps each page in turn)
    ev = Evidence()
    async with capkern.boot(ram_pages=16, evict_batch=2, policy="fifo",
                            pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        assert (await kernel.wait(kernel.spawn(programs.sequential, 40, 2, 1))).ok
    rank = {h: i for i, h in enumerate(ev.mapped_order())}
    reports = [body for label, body in ev.metadata if label == "evict"]
    assert len(reports) >= 10
    for body in reports:
        mapped = [rank[h] for h in body["mapped"]]
        assert mapped == sorted(mapped)


# -- the pool, sans-IO (plus its timer) --------------------------------------------------------


def test_pool_sends_full_random_batches_and_keeps_the_rest() -> None:
    sent: list[tuple[list[int], list[trio.Event]]] = []
    pool = DiscardPool(lambda hs, after: sent.append((hs, after)), batch=4)
    busy = trio.Event()
    pool.add([(1, None), (2, busy), (3, None)])
    assert sent == [] and len(pool) == 3 and 2 in pool
    pool.add([(10, None), (11, None)])
    assert len(sent) == 1 and len(sent[0][0]) == 4 and len(pool) == 1
    leftover = next(h for h in (1, 2, 3, 10, 11) if h in pool)
    assert (busy in sent[0][1]) == (2 in sent[0][0])  # the busy event travels with it
    pool.flush()
    assert sent[-1][0] == [leftover] and len(pool) == 0
    pool.flush()
    assert len(sent) == 2  # nothing pending: nothing sent


def test_pool_batches_are_not_in_arrival_order() -> None:
    sent: list[list[int]] = []
    pool = DiscardPool(lambda hs, after: sent.append(hs), batch=16)
    for _ in range(20):
        pool.add([(h, None) for h in range(len(sent) * 100, len(sent) * 100 + 16)])
    assert all(len(b) == 16 for b in sent)
    assert any(b != sorted(b) for b in sent)


def test_shuffled_returns_a_permutation() -> None:
    items = list(range(50))
    out = shuffled(items)
    assert sorted(out) == items and out is not items and items == list(range(50))


async def test_pool_timer_flushes_a_partial_pool(capkern_clock: Any) -> None:
    sent: list[list[int]] = []
    pool = DiscardPool(lambda hs, after: sent.append(hs), batch=8, delay=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run)
        pool.add([(1, None), (2, None)])
        await trio.sleep(0.4)
        assert sent == []
        await trio.sleep(0.2)
        assert sorted(sent[0]) == [1, 2]
        nursery.cancel_scope.cancel()
