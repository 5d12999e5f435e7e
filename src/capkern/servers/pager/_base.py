"""The policy interface every replacement policy implements (sans-IO; UNTRUSTED).

Kept apart from the policies themselves so that every policy module (``_policy``,
``_exact``, ``_alloc``) imports the interface without importing each other.
"""

from __future__ import annotations

import abc
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import ClassVar

__all__ = ["ReplacementPolicy"]


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

    def admit_many(self, handles: Iterable[int]) -> None:
        """:meth:`admit` each page, in order (what the pager calls at every report).

        The default loops over :meth:`admit`, so a policy that overrides ``admit`` alone
        is served right; a policy overriding this too (for speed) must keep the two in
        agreement."""
        admit = self.admit
        for handle in handles:
            admit(handle)

    def remove_many(self, handles: Iterable[int]) -> None:
        """:meth:`remove` each page, in order (the victims of an eviction); the default
        loops over :meth:`remove`, as :meth:`admit_many` does over ``admit``."""
        remove = self.remove
        for handle in handles:
            remove(handle)

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
