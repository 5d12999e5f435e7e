"""Seal bindings that never repeat within a boot (sans-IO, trusted memory).

A sealed page is bound (as AEAD associated data) to ``boot id || asid || incarnation ||
vpn || version``.  The place fields alone repeat: a process can ``munmap`` a page and
``mmap`` it again at the same address, an asid is reused by a later process, and a fresh
page-table entry would start its version at 0 again.  So the version is not a per-page
count: every seal draws the next value of **one boot-wide counter** kept here, in the
kernel's memory, that only ever increases and is never set from anything the untrusted
side says.  Hence no two seals of one boot carry the same version, so no two sealed
copies of one boot share a binding, whatever happened to the place in between -- and a
page-in, which demands the version recorded when *this* page-table entry's copy was
stored, accepts only that one copy.  Other boots differ in the boot id (and the key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ._aspace import PTE, VA_PAGES, AddressSpace

__all__ = ["ASID_LIMIT", "VERSION_LIMIT", "BindingError", "Versions", "binding"]

V = TypeVar("V", bound=tuple[object, AddressSpace, int, PTE])

ASID_LIMIT = 1 << 32
VERSION_LIMIT = 1 << 64


class BindingError(Exception):
    """A binding field does not fit its encoding (a kernel bug, never input)."""


def binding(aspace: AddressSpace, vpn: int, version: int) -> list[int]:
    """The binding of page ``vpn`` of ``aspace`` at ``version`` (as the CRYPT contract
    carries it), checked field by field so a bad one fails this page alone."""
    if not (0 <= aspace.asid < ASID_LIMIT and 0 <= aspace.incarnation < VERSION_LIMIT
            and 0 <= vpn < VA_PAGES and 0 < version < VERSION_LIMIT):
        raise BindingError(f"unencodable binding asid={aspace.asid} "
                           f"incarnation={aspace.incarnation} vpn={vpn:#x} version={version}")
    return [aspace.asid, aspace.incarnation, vpn, version]


class Versions:
    """The boot-wide version counter.  :meth:`next_seal` consumes a value before the
    seal is requested, so even a seal that fails never hands a version out twice."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    @property
    def last(self) -> int:
        """The most recent version handed out (0: none yet)."""
        return self._last

    def next_seal(self, aspace: AddressSpace, vpn: int, pte: PTE) -> list[int]:
        """A fresh version for ``pte`` (recorded as its newest seal) and its binding."""
        version = self._last + 1
        bound = binding(aspace, vpn, version)
        self._last = version
        pte.version = version
        return bound

    def seal_batch(self, victims: Sequence[V]) -> tuple[list[V], list[list[int]], list[str]]:
        """Fresh bindings for eviction victims ``(handle, aspace, vpn, pte)``: the
        victims that got one, their bindings, and why the others did not -- a binding
        that cannot be encoded fails its own page, never the batch."""
        bindings: list[list[int]] = []
        start = version = self._last
        for _h, aspace, vpn, pte in victims:  # next_seal inlined: no call per page
            version += 1
            asid, incarnation = aspace.asid, aspace.incarnation
            if not (0 <= asid < ASID_LIMIT and 0 <= incarnation < VERSION_LIMIT
                    and 0 <= vpn < VA_PAGES and version < VERSION_LIMIT):
                self._last = start  # nothing handed out yet: redo it page by page
                return self._seal_checked(victims)
            pte.version = version
            bindings.append([asid, incarnation, vpn, version])
        self._last = version
        return list(victims), bindings, []

    def _seal_checked(self, victims: Sequence[V]) -> tuple[list[V], list[list[int]],
                                                            list[str]]:
        """:meth:`seal_batch` page by page through :meth:`next_seal`, for a batch where
        some binding does not encode: it fails its own page only."""
        kept, bindings, errors = [], [], []
        for victim in victims:
            try:
                bindings.append(self.next_seal(victim[1], victim[2], victim[3]))
            except BindingError as exc:
                errors.append(str(exc))
                continue
            kept.append(victim)
        return kept, bindings, errors
