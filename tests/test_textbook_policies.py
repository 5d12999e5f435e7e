"""FIFO, LRU and OPT through the real kernel, pager and sealer give the textbook fault
counts at every frame count -- checked against a plain reference implementation written
here, independently of capkern (list-based, the way the textbooks state the policies)."""

from __future__ import annotations

import random

import pytest

from capkern.lab import CLASSIC, simulate


def textbook(refs: list[int], frames: int, policy: str) -> tuple[int, list[int | None]]:
    """Faults, and the victim of each reference (None: none), by the book.

    memory is a list: FIFO keeps arrival order, LRU recency order (front = least
    recent); OPT scans the future and evicts the page used farthest ahead (ties: the
    page that arrived last, as OSTEP's paging-policy.py).
    """
    memory: list[int] = []
    faults = 0
    victims: list[int | None] = []
    for i, page in enumerate(refs):
        victim = None
        if page in memory:
            if policy == "lru":
                memory.remove(page)
                memory.append(page)
        else:
            faults += 1
            if len(memory) == frames:
                if policy in ("fifo", "lru"):
                    victim = memory.pop(0)
                else:
                    future = refs[i + 1:]
                    dist = [future.index(p) if p in future else len(refs) for p in memory]
                    far = max(dist)
                    j = max(k for k, d in enumerate(dist) if d == far)
                    victim = memory.pop(j)
            memory.append(page)
        victims.append(victim)
    return faults, victims


# the published answers, so the reference implementation is checked too
PUBLISHED = [
    ("belady", "fifo", 3, 9), ("belady", "fifo", 4, 10),
    ("silberschatz", "fifo", 3, 15), ("silberschatz", "opt", 3, 9),
    ("silberschatz", "lru", 3, 12), ("ostep", "opt", 3, 5), ("ostep", "fifo", 3, 7),
    ("ostep", "lru", 3, 5),
]


@pytest.mark.parametrize(("name", "policy", "frames", "faults"), PUBLISHED)
async def test_published_answers(name: str, policy: str, frames: int, faults: int) -> None:
    assert textbook(CLASSIC[name], frames, policy)[0] == faults
    assert (await simulate(CLASSIC[name], policy, frames)).faults == faults


@pytest.mark.parametrize("name", sorted(CLASSIC))
@pytest.mark.parametrize("policy", ["fifo", "lru", "opt"])
async def test_every_frame_count(name: str, policy: str) -> None:
    refs = CLASSIC[name]
    for frames in range(1, len(set(refs)) + 2):
        got = await simulate(refs, policy, frames)
        assert got.faults == textbook(refs, frames, policy)[0], (frames, got)
        assert got.faults + got.hits == len(refs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", ["fifo", "lru", "opt"])
async def test_random_strings(seed: int, policy: str) -> None:
    rng = random.Random(seed)
    refs = [rng.randrange(rng.randint(2, 9)) for _ in range(rng.randint(1, 60))]
    for frames in (1, 2, 3, 5, 8):
        assert (await simulate(refs, policy, frames)).faults == textbook(refs, frames, policy)[0]


async def test_beladys_anomaly_fifo_only() -> None:
    refs = CLASSIC["belady"]
    curves = {p: [(await simulate(refs, p, f)).faults for f in range(1, 7)]
              for p in ("fifo", "lru", "opt")}
    assert curves["fifo"][3] > curves["fifo"][2]  # 4 frames fault more than 3
    for stack in ("lru", "opt"):  # stack algorithms: never more faults with more frames
        assert all(a >= b for a, b in zip(curves[stack], curves[stack][1:], strict=False))


@pytest.mark.parametrize("policy", ["fifo", "lru", "opt"])
async def test_each_access_hit_victim_and_frames(policy: str) -> None:
    refs = CLASSIC["silberschatz"]
    got = await simulate(refs, policy, 3, steps=True)
    assert got.steps is not None
    faults, victims = textbook(refs, 3, policy)
    assert got.faults == faults
    resident: set[int] = set()
    for step, page, victim in zip(got.steps, refs, victims, strict=True):
        assert step.page == page
        assert step.hit == (page in resident)  # a hit never evicts
        assert step.victim == victim
        if victim is not None:
            resident.discard(victim)
        resident.add(page)
        assert {p for p in step.frames if p is not None} == resident
        assert len(step.frames) == 3


async def test_fifo_order_is_arrival_order_even_when_hit() -> None:
    # 1 is hit just before the eviction: FIFO must still evict it (it arrived first)
    got = await simulate([1, 2, 3, 1, 4], "fifo", 3, steps=True)
    assert got.steps is not None and got.steps[-1].victim == 1
    lru = await simulate([1, 2, 3, 1, 4], "lru", 3, steps=True)
    assert lru.steps is not None and lru.steps[-1].victim == 2
