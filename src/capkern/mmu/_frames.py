"""Simulated physical RAM: a fixed pool of page frames (xv6's kalloc)."""

from __future__ import annotations

from .._pagefmt import PAGE_SIZE

__all__ = ["FrameTable"]

_ZERO_PAGE = bytes(PAGE_SIZE)  # what a freed frame is scrubbed with (made once)


class FrameTable:
    """``nframes`` frames of ``PAGE_SIZE`` bytes in one bytearray, with a free list."""

    def __init__(self, nframes: int) -> None:
        self.nframes = nframes
        self.ram = bytearray(nframes * PAGE_SIZE)
        self.view = memoryview(self.ram)
        self._free = list(range(nframes - 1, -1, -1))

    @property
    def free_count(self) -> int:
        return len(self._free)

    def alloc(self) -> int | None:
        """A free frame number, or None when RAM is full."""
        return self._free.pop() if self._free else None

    def free(self, frame: int) -> None:
        """Return a frame; it is scrubbed so nothing leaks to its next owner."""
        start = frame * PAGE_SIZE
        self.view[start : start + PAGE_SIZE] = _ZERO_PAGE  # a view: never resizes RAM
        self._free.append(frame)

    def frame(self, frame: int) -> memoryview:
        start = frame * PAGE_SIZE
        return self.view[start : start + PAGE_SIZE]
