"""Where the pager puts sealed pages on its block device (sans-IO).

Blocks ``0 .. meta_blocks-1`` pack the nonce and tag of every slot (``META_LEN`` bytes
each); every other block holds one page's ciphertext.  None of this is secret.
"""

from __future__ import annotations

from ...pagefmt import META_LEN, NONCE_LEN

__all__ = ["NoSpace", "SwapLayout", "pack_meta_entry", "unpack_meta_entry"]


class NoSpace(Exception):
    """Every slot is in use."""


class SwapLayout:
    """Slots for sealed pages on ``nblocks`` blocks of ``block_size`` bytes."""

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
        self._free = list(range(slots - 1, -1, -1))

    @property
    def used(self) -> int:
        return len(self._slot_of)

    def lookup(self, handle: int) -> int | None:
        return self._slot_of.get(handle)

    def allocate(self, handle: int) -> int:
        slot = self._slot_of.get(handle)
        if slot is not None:
            return slot
        if not self._free:
            raise NoSpace(f"all {self.slots} swap slots are in use")
        slot = self._free.pop()
        self._slot_of[handle] = slot
        return slot

    def release(self, handle: int) -> None:
        slot = self._slot_of.pop(handle, None)
        if slot is not None:
            self._free.append(slot)

    def handles(self) -> list[int]:
        return list(self._slot_of)

    def data_lba(self, slot: int) -> int:
        return self.meta_blocks + slot

    def meta_lba(self, slot: int) -> int:
        return slot // self.per_meta

    def meta_offset(self, slot: int) -> int:
        return (slot % self.per_meta) * META_LEN


def pack_meta_entry(nonce: bytes, tag: bytes) -> bytes:
    return nonce + tag


def unpack_meta_entry(block: bytes, offset: int) -> tuple[bytes, bytes]:
    entry = block[offset : offset + META_LEN]
    return entry[:NONCE_LEN], entry[NONCE_LEN:]
