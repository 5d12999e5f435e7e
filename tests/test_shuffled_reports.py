"""The order of shuffled reports (referenced, dirty, discard batches): a permutation
drawn from the OS's CSPRNG with one read per list, or from a seeded boot's PRNG."""

from __future__ import annotations

import collections
import itertools
import random
import secrets

from capkern.mmu._discards import shuffled


def test_csprng_shuffle_is_a_permutation_of_any_length() -> None:
    for n in (0, 1, 2, 3, 17, 1000):
        items = list(range(n))
        out = shuffled(items, secrets.SystemRandom())
        assert sorted(out) == items
        assert out is not items


def test_csprng_shuffle_reaches_every_order_about_equally() -> None:
    # 3 items: 6 orders; 6000 draws put about 1000 in each (a biased or fixed shuffle,
    # e.g. one that never moves the last item, leaves some order near 0)
    rng = secrets.SystemRandom()
    counts = collections.Counter(tuple(shuffled("abc", rng)) for _ in range(6000))
    assert set(counts) == set(itertools.permutations("abc"))
    assert all(700 < c < 1300 for c in counts.values()), counts


def test_csprng_shuffle_differs_between_calls() -> None:
    items = list(range(64))
    assert shuffled(items, secrets.SystemRandom()) != shuffled(items, secrets.SystemRandom())


def test_seeded_shuffle_repeats() -> None:
    items = list(range(50))
    assert shuffled(items, random.Random(3)) == shuffled(items, random.Random(3))
    assert sorted(shuffled(items, random.Random(3))) == items
