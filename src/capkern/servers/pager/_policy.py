"""Page replacement policies (sans-IO).  They live in the untrusted pager.

A policy sees opaque page handles and the reference/dirty bits the kernel harvests
from page tables at each eviction request -- never page contents.  Plug in your own by
subclassing :class:`ReplacementPolicy` and passing it to ``make_pager(policy=...)``.
A bad choice costs speed only: the kernel validates every victim.
"""

from __future__ import annotations

import abc
import itertools
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import ClassVar

from ...errors import ConfigError

__all__ = ["POLICIES", "ClockPolicy", "FIFOPolicy", "LRUPolicy", "RandomPolicy",
           "ReplacementPolicy", "make_policy"]


class ReplacementPolicy(abc.ABC):
    """Chooses which resident pages to evict.

    The pager drives a policy with, at each eviction request: :meth:`admit` for pages that
    became resident, :meth:`referenced` and :meth:`dirtied` with the bits the kernel
    harvested since the last request, then :meth:`choose`; it calls :meth:`remove` for
    pages that left memory.  To write your own, subclass, set ``name`` and implement
    ``admit``, ``remove``, ``choose``, ``__contains__`` and ``__len__``; override
    ``referenced``/``dirtied`` if the policy uses them.  ``choose`` must be deterministic
    and return distinct resident handles only; it must not forget them (the kernel may
    keep a page after all and report it again).
    """

    name: ClassVar[str] = "policy"
    #: exact only when the kernel reports every reference in order (``boot(precise=True)``)
    precise: ClassVar[bool] = False
    #: needs the future of the trace (:meth:`next_uses`): offline simulation only
    needs_future: ClassVar[bool] = False

    @abc.abstractmethod
    def admit(self, handle: int) -> None:
        """The page became resident (idempotent)."""

    @abc.abstractmethod
    def remove(self, handle: int) -> None:
        """The page is no longer resident (unknown handles are ignored)."""

    @abc.abstractmethod
    def choose(self, n: int) -> list[int]:
        """Up to ``n`` distinct resident victims (not removed: the kernel confirms)."""

    @abc.abstractmethod
    def __contains__(self, handle: object) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    def referenced(self, handles: Iterable[int]) -> None:
        """These pages were accessed since the last harvest (default: ignored)."""

    def dirtied(self, handles: Iterable[int]) -> None:
        """These pages are dirty (a hint; default: ignored)."""

    def next_uses(self, handles: Sequence[int], positions: Sequence[int]) -> None:
        """Oracle mode only (offline simulation, ``access(..., future=True)``): the
        reference to ``handles[i]`` will next be repeated at trace position
        ``positions[i]`` (``2**63 - 1``: never).  Parallel to the precise
        :meth:`referenced` list.  Default: ignored; Belady's OPT uses it."""

    def spaces(self, handles: Sequence[int], tags: Sequence[int]) -> None:
        """Precise mode: newly mapped ``handles[i]`` belongs to the address space with
        opaque tag ``tags[i]`` (default: ignored; frame-allocation policies use it)."""

    def faulting(self, tag: int) -> None:
        """Precise mode: the next :meth:`choose` serves a fault of space ``tag``."""

    def __bool__(self) -> bool:
        """Always true: a policy is an object, not a container, even with no pages.

        Without this, ``__len__`` would make a fresh policy falsy and ``policy or
        default`` would silently discard a user's policy.
        """
        return True


class _OrderedPolicy(ReplacementPolicy):
    """Shared bookkeeping: resident pages in an insertion-ordered dict, oldest first."""

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def admit(self, handle: int) -> None:
        self._order.setdefault(handle, None)

    def remove(self, handle: int) -> None:
        self._order.pop(handle, None)

    def choose(self, n: int) -> list[int]:
        """The first ``n`` pages of the order."""
        return list(itertools.islice(self._order, max(0, n)))

    def __contains__(self, handle: object) -> bool:
        return handle in self._order

    def __len__(self) -> int:
        return len(self._order)


class FIFOPolicy(_OrderedPolicy):
    """Evict in order of admission; references do not matter."""

    name = "fifo"


class LRUPolicy(_OrderedPolicy):
    """LRU: referenced pages move to the MRU end, in the order the kernel reports them;
    victims come from the LRU end.

    Exact on a precise boot (``boot(precise=True)``: every reference, in order).  On a
    normal boot the order is only as fine as the harvests: pages referenced between two
    evictions look equally recent (ordered by how the kernel listed them).
    """

    name = "lru"
    precise = True

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self._order:
                self._order.move_to_end(h)


class ClockPolicy(ReplacementPolicy):
    """Second chance: a hand sweeps the pages; a referenced page is skipped once.

    The ring is an ordered dict whose front is the page under the hand; advancing the
    hand rotates the front to the back, in O(1).  A new page enters just behind the hand
    with a clear bit, so it is the last one the hand reaches.  :meth:`choose` moves the
    hand and clears the bits it passes, as the real algorithm does.
    """

    name = "clock"

    def __init__(self) -> None:
        self._ref: OrderedDict[int, bool] = OrderedDict()  # ring order; front = hand

    def admit(self, handle: int) -> None:
        self._ref.setdefault(handle, False)

    def remove(self, handle: int) -> None:
        self._ref.pop(handle, None)

    def referenced(self, handles: Iterable[int]) -> None:
        for h in handles:
            if h in self._ref:
                self._ref[h] = True

    def choose(self, n: int) -> list[int]:
        """Sweep the hand: clear set bits (second chance), take clear ones as victims."""
        victims: dict[int, None] = {}
        # at most two sweeps: the first clears bits, the second must find victims
        for _ in range(2 * len(self._ref)):
            if len(victims) >= n or len(victims) == len(self._ref):
                break
            h, bit = next(iter(self._ref.items()))
            self._ref.move_to_end(h)  # advance the hand past h
            if h in victims:
                continue
            if bit:
                self._ref[h] = False
            else:
                victims[h] = None
        return list(victims)

    def __contains__(self, handle: object) -> bool:
        return handle in self._ref

    def __len__(self) -> int:
        return len(self._ref)


class RandomPolicy(_OrderedPolicy):
    """Uniformly random victims (seeded: deterministic)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._rng = random.Random(seed)

    def choose(self, n: int) -> list[int]:
        """A seeded sample, drawn from the sorted handles so runs are reproducible."""
        pages = sorted(self._order)
        return self._rng.sample(pages, min(max(0, n), len(pages)))


POLICIES: dict[str, type[ReplacementPolicy]] = {
    p.name: p for p in (FIFOPolicy, ClockPolicy, LRUPolicy, RandomPolicy)
}


def make_policy(name: str) -> ReplacementPolicy:
    """A fresh policy by name (``fifo``, ``clock``, ``lru``, ``random``, ``lfu``,
    ``mru``, ``opt``)."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown replacement policy {name!r}; choose from {', '.join(POLICIES)}"
        ) from None


# the exact and offline policies live in their own module; registered here so every
# user of POLICIES (the default pager, the CLI) sees them
from ._alloc import LocalLRUPolicy, PFFPolicy, WorkingSetPolicy  # noqa: E402
from ._exact import LFUPolicy, MRUPolicy, OPTPolicy  # noqa: E402

_EXACT: tuple[type[ReplacementPolicy], ...] = (LFUPolicy, MRUPolicy, OPTPolicy, LocalLRUPolicy,
                                               WorkingSetPolicy, PFFPolicy)
POLICIES.update({cls.name: cls for cls in _EXACT})
