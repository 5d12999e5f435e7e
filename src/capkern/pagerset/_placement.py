"""Which pagers of a set hold a page, and in which order to ask them (TRUSTED, sans-IO).

The kernel only chooses *where to send*; what each pager does with a page (its policy,
its disk) stays its own business.  Placement is rendezvous hashing (highest random
weight) of the page's opaque handle over the pagers that are not quarantined: it is
deterministic, spreads pages evenly, and when a pager is quarantined only the pages it
held move.  The hash is keyed per boot, so the untrusted side cannot aim pages at one
pager by choosing handles -- it does not choose handles anyway, the kernel does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from ..errors import ConfigError

__all__ = ["Placement", "overhead_erasure", "overhead_mirror"]


class Placement:
    """``n`` pagers, pages kept on ``k`` of them (mirror) or one shard on each (erasure).

    ``quarantine(i)`` stops sending to pager ``i`` (it failed integrity checks);
    ``rejoin(i)`` puts a replacement in its place (to be refilled by the caller).
    """

    def __init__(self, n: int, k: int, *, key: bytes | None = None) -> None:
        if type(n) is not int or type(k) is not int or not 1 <= k <= n:
            raise ConfigError(f"a pager set needs 1 <= k <= n, got k={k!r} n={n!r}")
        self.n = n
        self.k = k
        self._key = key if key is not None else os.urandom(16)
        self.quarantined: set[int] = set()

    def healthy(self) -> list[int]:
        """Pagers still asked, in index order."""
        return [i for i in range(self.n) if i not in self.quarantined]

    def quarantine(self, index: int) -> None:
        """Stop using pager ``index``; ConfigError for an index outside the set."""
        self._check(index)
        self.quarantined.add(index)

    def rejoin(self, index: int) -> None:
        """A (replacement) pager at ``index`` is usable again."""
        self._check(index)
        self.quarantined.discard(index)

    def _check(self, index: int) -> None:
        if type(index) is not int or not 0 <= index < self.n:
            raise ConfigError(f"no pager {index!r} in a set of {self.n}")

    def _weight(self, handle: int, pager: int) -> bytes:
        h = hashlib.blake2b(key=self._key, digest_size=8)
        h.update(handle.to_bytes(16, "big", signed=True) + pager.to_bytes(2, "big"))
        return h.digest()

    def ranking(self, handle: int, among: Iterable[int] | None = None) -> list[int]:
        """Every healthy pager (or those of ``among``), best first, for ``handle``."""
        pool = self.healthy() if among is None else [i for i in among
                                                     if i not in self.quarantined]
        return sorted(pool, key=lambda p: self._weight(handle, p), reverse=True)

    def mirrors(self, handle: int) -> list[int]:
        """The ``k`` pagers (fewer if fewer are healthy) that should hold ``handle``."""
        return self.ranking(handle)[:self.k]

    def fetch_order(self, handle: int, holders: Iterable[int]) -> list[int]:
        """The healthy pagers among ``holders`` in the order to ask them: the first is
        asked, the next on a failure (or after the hedging delay)."""
        return self.ranking(handle, holders)

    def shard_holders(self, handle: int) -> list[int]:
        """Pager of each shard index for an ``n``-shard page: a rotation by handle, so
        the data shards (cheap to decode) are spread over every pager."""
        start = int.from_bytes(self._weight(handle, 0xFFFF), "big") % self.n
        return [(start + i) % self.n for i in range(self.n)]


def overhead_mirror(k: int) -> float:
    """Bytes stored per byte of sealed page with ``k`` mirrored copies."""
    return float(k)


def overhead_erasure(n: int, m: int, blob_len: int, tag_len: int = 16) -> float:
    """Bytes stored per byte of sealed page with ``n`` shards (``m`` rebuild), tags
    included."""
    return n * (-(-blob_len // m) + tag_len) / blob_len
