"""The memory subsystem (trusted): frames, page tables, address spaces, the fault path."""

from ._aspace import PTE, AddressSpace
from ._frames import FrameTable
from ._ports import ServerPort

__all__ = ["PTE", "AddressSpace", "FrameTable", "ServerPort"]
