"""The memory subsystem (trusted): frames, page tables, address spaces, the fault path."""

from .aspace import PTE, AddressSpace
from .frames import FrameTable

__all__ = ["PTE", "AddressSpace", "FrameTable"]
