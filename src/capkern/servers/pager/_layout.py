"""Where the pager puts sealed pages on its block device (sans-IO).

Blocks ``0 .. meta_blocks-1`` pack the nonce and tag of every slot (``META_LEN`` bytes
each); every other block holds one page's ciphertext.  None of this is secret.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from ..._pagefmt import META_LEN, NONCE_LEN, TAG_LEN

__all__ = ["NoSpace", "Plan", "SwapLayout", "join_sealed", "pack_meta_entry",
           "unpack_meta_entry"]

Plan = dict[int, tuple[int, int | None]]
"""A batch's reserved slots: ``handle -> (new slot, previous slot or None)``."""


class NoSpace(Exception):
    """Every slot is in use."""


class SwapLayout:
    """Slots for sealed pages on ``nblocks`` blocks of ``block_size`` bytes.

    The slot count ``s`` is the largest with ``s + ceil(s / per_meta) <= nblocks``, so the
    metadata region covers every data slot and the two regions never overlap.  Freed
    slots are reused lowest-first for new handles (deterministic placement).
    """

    def __init__(self, nblocks: int, block_size: int = 4096) -> None:
        if block_size < META_LEN:
            raise ValueError(f"block size {block_size} is smaller than one metadata entry")
        self.per_meta = block_size // META_LEN
        # s slots need ceil(s / per_meta) metadata blocks: s + ceil(s/per_meta) <= nblocks
        slots = (nblocks * self.per_meta) // (self.per_meta + 1)
        while slots > 0 and slots + -(-slots // self.per_meta) > nblocks:
            slots -= 1
        if slots < 1:
            raise ValueError(f"{nblocks} blocks hold no page")
        self.slots = slots
        self.meta_blocks = -(-slots // self.per_meta)
        self._slot_of: dict[int, int] = {}
        self._free = list(range(slots))  # a min-heap: sorted lists are heaps

    @property
    def used(self) -> int:
        """Slots currently holding a page."""
        return len(self._slot_of)

    def lookup(self, handle: int) -> int | None:
        """The slot of ``handle``, or None if it is not in swap."""
        return self._slot_of.get(handle)

    def allocate(self, handle: int) -> int:
        """The slot for ``handle``: its existing one, else a free one (NoSpace if none)."""
        slot = self._slot_of.get(handle)
        if slot is not None:
            return slot
        if not self._free:
            raise NoSpace(f"all {self.slots} swap slots are in use")
        slot = heapq.heappop(self._free)
        self._slot_of[handle] = slot
        return slot

    def release(self, handle: int) -> None:
        """Free the slot of ``handle`` (unknown handles are ignored)."""
        slot = self._slot_of.pop(handle, None)
        if slot is not None:
            heapq.heappush(self._free, slot)

    def take(self) -> int:
        """Reserve the lowest free slot for a copy not yet written (NoSpace if none).

        The slot belongs to no handle until :meth:`bind`; give it back with :meth:`put`
        if the write fails.  This is how a page is replaced copy-on-write: the previous
        copy stays where it is, and fetchable, until the new one is on the disk.
        """
        if not self._free:
            raise NoSpace(f"all {self.slots} swap slots are in use")
        return heapq.heappop(self._free)

    def put(self, slot: int) -> None:
        """Return a slot reserved by :meth:`take` (or left by :meth:`bind`) to the pool."""
        self._check_slot(slot)
        heapq.heappush(self._free, slot)

    def bind(self, handle: int, slot: int) -> int | None:
        """Make ``slot`` the home of ``handle``; returns its previous slot, if another.

        The caller frees the previous slot (with :meth:`put`) once it no longer needs it.
        """
        self._check_slot(slot)
        old = self._slot_of.get(handle)
        self._slot_of[handle] = slot
        return None if old == slot else old

    def reserve(self, handles: Iterable[int]) -> Plan:
        """Reserve slots for a batch stored copy-on-write (distinct ``handles``).

        Handles not in swap come first, each to the lowest free slot, so rewrites never
        take the last free slots from new pages; a new handle that finds none is left
        out.  A handle already in swap gets a free slot too or, when none is left, its
        own (rewritten in place).  Nothing is bound until :meth:`commit`; give the
        reservation back with :meth:`cancel` if the write fails.
        """
        slot_of, free = self._slot_of, self._free
        plan: Plan = {}
        held: list[tuple[int, int]] = []
        for handle in handles:
            old = slot_of.get(handle)
            if old is not None:
                held.append((handle, old))
            elif free:
                plan[handle] = (heapq.heappop(free), None)
        for handle, old in held:
            plan[handle] = (heapq.heappop(free) if free else old, old)
        return plan

    def commit(self, plan: Plan) -> None:
        """The batch is on the disk: each handle lives in its reserved slot now, and a
        previous slot it no longer uses returns to the pool (:meth:`bind` + :meth:`put`
        for every page, with the slots known valid)."""
        slot_of, free = self._slot_of, self._free
        for handle, (slot, _old) in plan.items():
            previous = slot_of.get(handle)
            slot_of[handle] = slot
            if previous is not None and previous != slot:
                heapq.heappush(free, previous)

    def cancel(self, plan: Plan) -> None:
        """The batch's write failed: new slots return to the pool, and a handle that
        was rewritten in place (its previous copy may be half overwritten) is dropped,
        so a fetch says it is not in swap rather than returning a mix."""
        for handle, (slot, old) in plan.items():
            if slot != old:
                self.put(slot)
            else:
                self.release(handle)

    def handles(self) -> list[int]:
        """Handles in swap, in allocation order."""
        return list(self._slot_of)

    def _check_slot(self, slot: int) -> None:
        """Refuse a slot number outside ``0 .. slots-1``."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} outside 0..{self.slots - 1}")

    def locate(self, slot: int) -> tuple[int, int, int]:
        """``(data_lba, meta_lba, meta_offset)`` of ``slot``, checked once (a store
        needs all three)."""
        if not 0 <= slot < self.slots:
            self._check_slot(slot)  # raises, with the message
        meta_lba, index = divmod(slot, self.per_meta)
        return self.meta_blocks + slot, meta_lba, index * META_LEN

    def find(self, handle: int) -> tuple[int, int, int] | None:
        """:meth:`locate` of the slot of ``handle``, or None if it is not in swap: a
        fetch's one lookup (a bound slot is always in range: :meth:`bind` and
        :meth:`commit` only bind slots of this layout)."""
        slot = self._slot_of.get(handle)
        if slot is None:
            return None
        meta_lba, index = divmod(slot, self.per_meta)
        return self.meta_blocks + slot, meta_lba, index * META_LEN

    def data_lba(self, slot: int) -> int:
        """The block holding the ciphertext of ``slot``."""
        self._check_slot(slot)
        return self.meta_blocks + slot

    def meta_lba(self, slot: int) -> int:
        """The metadata block holding the nonce and tag of ``slot``."""
        self._check_slot(slot)
        return slot // self.per_meta

    def meta_offset(self, slot: int) -> int:
        """The byte offset of ``slot``'s entry inside its metadata block."""
        self._check_slot(slot)
        return (slot % self.per_meta) * META_LEN


def pack_meta_entry(nonce: bytes, tag: bytes) -> bytes:
    """One ``META_LEN``-byte metadata entry: ``nonce || tag``."""
    if len(nonce) != NONCE_LEN or len(tag) != TAG_LEN:
        raise ValueError(f"need a {NONCE_LEN}-byte nonce and a {TAG_LEN}-byte tag")
    return bytes(nonce) + bytes(tag)


def join_sealed(block: bytes | bytearray, offset: int, ciphertext: bytes) -> bytes:
    """The sealed blob ``nonce || ciphertext || tag`` of the metadata entry at
    ``offset`` of ``block`` and its ciphertext, built in one copy (a fetch's reply; a
    later change to ``block`` does not change it)."""
    if offset < 0 or offset + META_LEN > len(block):
        raise ValueError(f"entry at {offset} does not fit a {len(block)}-byte block")
    return b"".join((block[offset : offset + NONCE_LEN], ciphertext,
                     block[offset + NONCE_LEN : offset + META_LEN]))


def unpack_meta_entry(block: bytes | bytearray, offset: int) -> tuple[bytes, bytes]:
    """``(nonce, tag)`` from the entry at ``offset`` of a metadata block (its bytes are
    copied out: a later change to ``block`` does not change them)."""
    if offset < 0 or offset + META_LEN > len(block):
        raise ValueError(f"entry at {offset} does not fit a {len(block)}-byte block")
    entry = bytes(block[offset : offset + META_LEN])
    return entry[:NONCE_LEN], entry[NONCE_LEN:]
