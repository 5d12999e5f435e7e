"""Placement of a page's copies and shards over a pager set: deterministic, even,
quarantine-aware, and quarantining one pager moves only the pages it held."""

from __future__ import annotations

from collections import Counter

import pytest

from capkern.errors import ConfigError
from capkern.pagerset import Placement

HANDLES = range(3000)


def test_mirrors_are_k_distinct_healthy_pagers() -> None:
    pl = Placement(5, 3, key=b"k" * 16)
    for h in HANDLES:
        got = pl.mirrors(h)
        assert len(got) == 3 == len(set(got)) and all(0 <= p < 5 for p in got)
    assert Placement(5, 3, key=b"k" * 16).mirrors(42) == pl.mirrors(42)


def test_spread_is_even() -> None:
    pl = Placement(5, 2)
    load = Counter(p for h in HANDLES for p in pl.mirrors(h))
    expected = len(HANDLES) * 2 / 5
    assert all(abs(load[p] - expected) < 0.15 * expected for p in range(5)), load
    firsts = Counter(pl.mirrors(h)[0] for h in HANDLES)
    assert len(firsts) == 5  # every pager is somebody's first choice


def test_quarantine_moves_only_the_pages_it_held() -> None:
    pl = Placement(5, 2)
    before = {h: pl.mirrors(h) for h in HANDLES}
    pl.quarantine(3)
    for h in HANDLES:
        after = pl.mirrors(h)
        assert 3 not in after and len(after) == 2
        if 3 not in before[h]:
            assert after == before[h]
        else:
            assert next(p for p in before[h] if p != 3) in after
    pl.rejoin(3)
    assert all(pl.mirrors(h) == before[h] for h in HANDLES)


def test_fetch_order_skips_quarantined_holders() -> None:
    pl = Placement(4, 3)
    holders = pl.mirrors(9)
    assert pl.fetch_order(9, holders) == holders
    pl.quarantine(holders[0])
    assert pl.fetch_order(9, holders) == holders[1:]
    for p in range(4):
        pl.quarantine(p)
    assert pl.mirrors(9) == [] and pl.fetch_order(9, holders) == []


def test_fewer_healthy_than_k() -> None:
    pl = Placement(3, 3)
    pl.quarantine(1)
    assert sorted(pl.mirrors(5)) == [0, 2] and pl.healthy() == [0, 2]


def test_shard_holders_rotate_over_every_pager() -> None:
    pl = Placement(5, 5)
    starts: Counter[int] = Counter()
    for h in range(500):
        holders = pl.shard_holders(h)
        assert sorted(holders) == list(range(5))
        starts[holders[0]] += 1
    assert len(starts) == 5


@pytest.mark.parametrize(("n", "k"), [(3, 4), (0, 0), (3, 0), (3.0, 1), (True, 1)])
def test_bad_sets(n: object, k: object) -> None:
    with pytest.raises(ConfigError):
        Placement(n, k)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [-1, 5, "1", True])
def test_bad_pager_index(index: object) -> None:
    with pytest.raises(ConfigError):
        Placement(5, 2).quarantine(index)  # type: ignore[arg-type]
