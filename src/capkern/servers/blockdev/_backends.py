"""Block device backends (sans-IO apart from the file backend's real file I/O).

A backend is a fixed array of ``nblocks`` blocks of ``block_size`` bytes.  Requests out
of range or of the wrong size are refused before anything is written, so a bad request
changes nothing.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Self

__all__ = ["BackendIOError", "BlockBackend", "BlockDevError", "DeviceClosed", "FileBackend",
           "Geometry", "MemoryBackend", "Misaligned", "OutOfRange", "open_backend"]


class BlockDevError(Exception):
    """Base of block device errors."""


class OutOfRange(BlockDevError):
    """A block address beyond the device."""


class Misaligned(BlockDevError):
    """Data that is not exactly one block, or a bad block count."""


class BackendIOError(BlockDevError):
    """The medium failed (short read/write, OS error)."""


class DeviceClosed(BlockDevError):
    """The device was closed."""


def _is_int(value: object) -> bool:
    """True for a real integer (``bool`` is an ``int`` subclass but not a block number)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Geometry:
    """``nblocks`` blocks of ``block_size`` bytes: the request checks and counters every
    backend shares, synchronous (:class:`BlockBackend`) or asynchronous
    (``AsyncBlockBackend``), so both refuse exactly the same bad requests."""

    def __init__(self, nblocks: int, block_size: int) -> None:
        if nblocks < 1 or block_size < 1:
            raise ValueError("a device needs at least one block of at least one byte")
        self.nblocks = nblocks
        self.block_size = block_size
        self.reads = self.writes = self.flushes = self.trims = 0
        self.closed = False

    def check(self, lba: int, count: int = 1) -> None:
        """Refuse a closed device, a non-positive ``count`` or blocks beyond the end.

        Non-integers (including ``bool``) are refused with the same errors rather than a
        ``TypeError``: requests come from untrusted peers, so every bad one maps to a
        :class:`BlockDevError` the server can report.
        """
        if type(lba) is int and type(count) is int and lba >= 0 and count > 0 \
                and lba + count <= self.nblocks and not self.closed:
            return  # the usual request: exact ints in range (bool is not int by type)
        if self.closed:
            raise DeviceClosed("device is closed")
        if not _is_int(count) or count < 1:
            raise Misaligned(f"block count {count!r} must be a positive integer")
        if not _is_int(lba) or lba < 0 or lba + count > self.nblocks:
            raise OutOfRange(f"{count} block(s) at {lba!r} outside 0..{self.nblocks - 1}")

    def check_reads(self, lbas: Sequence[int]) -> None:
        """:meth:`check` every block of a batch read, the usual ones without a call each
        (unless a subclass extends ``check``: then it is asked about every block)."""
        if self.closed and lbas:
            raise DeviceClosed("device is closed")
        if type(self).check is not Geometry.check:
            for lba in lbas:
                self.check(lba)
            return
        end = self.nblocks
        for lba in lbas:
            if type(lba) is not int or not 0 <= lba < end:
                self.check(lba)  # raises the typed error (or passes an int subclass)

    def check_writes(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """:meth:`check` and ``_check_data`` every ``(lba, data)`` of a batch write, the
        usual ones (exact ints in range, exactly one block of bytes) without a call each."""
        if self.closed and blocks:
            raise DeviceClosed("device is closed")
        end, size = self.nblocks, self.block_size
        every = type(self).check is not Geometry.check  # a subclass's own check: always
        for lba, data in blocks:
            if every or type(lba) is not int or not 0 <= lba < end:
                self.check(lba)
            if type(data) is not bytes or len(data) != size:
                self._check_data(data)

    def _check_data(self, data: bytes) -> None:
        """Refuse anything but exactly one block of bytes."""
        if type(data) is bytes and len(data) == self.block_size:
            return
        if not isinstance(data, bytes | bytearray | memoryview):
            raise Misaligned(f"block data must be bytes, not {type(data).__name__}")
        if len(data) != self.block_size:
            raise Misaligned(f"{len(data)} bytes is not one {self.block_size}-byte block")


class BlockBackend(Geometry, abc.ABC):
    """A fixed-size array of ``nblocks`` blocks of ``block_size`` bytes.

    Subclasses implement the single-block primitives; the base class supplies range
    checks, the all-or-nothing batch operations and the counters (``reads``, ``writes``,
    ``flushes``, ``trims``) that the block device server reports as statistics.
    """

    @abc.abstractmethod
    def read(self, lba: int) -> bytes:
        """Block ``lba`` (zeros if never written)."""

    @abc.abstractmethod
    def write(self, lba: int, data: bytes) -> None:
        """Replace block ``lba`` with ``data`` (exactly one block)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every completed write durable."""

    @abc.abstractmethod
    def trim(self, lba: int, count: int = 1) -> None:
        """Discard ``count`` blocks from ``lba``: they read as zeros afterwards."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the medium; idempotent.  Later requests raise :class:`DeviceClosed`."""

    def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        """Read several blocks; every address is checked before any is read."""
        self.check_reads(lbas)
        read = self.read
        return [read(lba) for lba in lbas]

    def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """Validate every block first, then write them all."""
        self.check_writes(blocks)
        write = self.write
        for lba, data in blocks:
            write(lba, data)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class MemoryBackend(BlockBackend):
    """Sparse in-memory blocks; unwritten and trimmed blocks read as zeros."""

    def __init__(self, nblocks: int, block_size: int = 4096) -> None:
        super().__init__(nblocks, block_size)
        self._blocks: dict[int, bytes] = {}
        self._zero = bytes(block_size)

    def read(self, lba: int) -> bytes:
        self.check(lba)
        self.reads += 1
        return self._blocks.get(lba, self._zero)

    def write(self, lba: int, data: bytes) -> None:
        self.check(lba)
        self._check_data(data)
        self.writes += 1
        self._blocks[lba] = bytes(data)

    def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        """Every address checked first, then the blocks straight from memory -- unless a
        subclass changes what reading a block does (the kit's malicious disks override
        :meth:`read`): then every block goes through its ``read``."""
        if type(self).read is not MemoryBackend.read:
            return super().read_many(lbas)
        self.check_reads(lbas)
        self.reads += len(lbas)
        get, zero = self._blocks.get, self._zero
        return [get(lba, zero) for lba in lbas]

    def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """Every block checked first, then all stored -- through :meth:`write` if a
        subclass overrides it, as :meth:`read_many` does for reads."""
        if type(self).write is not MemoryBackend.write:
            super().write_many(blocks)
            return
        self.check_writes(blocks)
        store = self._blocks
        for lba, data in blocks:
            store[lba] = bytes(data)
        self.writes += len(blocks)

    def flush(self) -> None:
        self.check(0)
        self.flushes += 1

    def trim(self, lba: int, count: int = 1) -> None:
        self.check(lba, count)
        self.trims += 1
        for b in range(lba, lba + count):
            self._blocks.pop(b, None)

    def close(self) -> None:
        self.closed = True


class FileBackend(BlockBackend):
    """A real file of fixed size: ``pread``/``pwrite``; flush is ``fsync``.

    ``create=True`` makes (or truncates) the file and sizes it with ``ftruncate``;
    ``create=False`` reopens an existing device, which must have exactly the right size
    so that a device is never silently reinterpreted with another geometry.
    """

    def __init__(self, path: str | os.PathLike[str], nblocks: int, block_size: int = 4096, *,
                 create: bool = True) -> None:
        super().__init__(nblocks, block_size)
        self.path = os.fspath(path)
        self._fd = self._open(create)

    def _open(self, create: bool) -> int:
        """Open (or create and size) the file; never leaks the descriptor on failure."""
        size = self.nblocks * self.block_size
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise BackendIOError(f"cannot open {self.path}: {exc}") from None
        try:
            if create:
                os.ftruncate(fd, size)
            actual = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise BackendIOError(f"cannot size {self.path}: {exc}") from None
        if actual != size:
            os.close(fd)
            raise BlockDevError(f"{self.path} is {actual} bytes, expected {size}")
        return fd

    def read(self, lba: int) -> bytes:
        self.check(lba)
        try:
            data = os.pread(self._fd, self.block_size, lba * self.block_size)
        except OSError as exc:
            raise BackendIOError(str(exc)) from None
        if len(data) != self.block_size:
            raise BackendIOError(f"short read at block {lba}")
        self.reads += 1
        return data

    def write(self, lba: int, data: bytes) -> None:
        self.check(lba)
        self._check_data(data)
        self._pwrite(lba, data)
        self.writes += 1

    def _pwrite(self, lba: int, data: bytes) -> None:
        """Write one already-validated block; a short write is an I/O error."""
        try:
            n = os.pwrite(self._fd, data, lba * self.block_size)
        except OSError as exc:
            raise BackendIOError(str(exc)) from None
        if n != self.block_size:
            raise BackendIOError(f"short write at block {lba}")

    def flush(self) -> None:
        self.check(0)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise BackendIOError(str(exc)) from None
        self.flushes += 1

    def trim(self, lba: int, count: int = 1) -> None:
        self.check(lba, count)
        zero = bytes(self.block_size)
        for b in range(lba, lba + count):
            self._pwrite(b, zero)
        self.trims += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError as exc:
                raise BackendIOError(str(exc)) from None


def open_backend(spec: str, nblocks: int, block_size: int = 4096) -> BlockBackend:
    """Build a backend from a spec: ``"memory"`` or ``"file:PATH"`` (created fresh)."""
    if spec == "memory":
        return MemoryBackend(nblocks, block_size)
    if spec.startswith("file:") and len(spec) > 5:
        return FileBackend(spec[5:], nblocks, block_size)
    raise ValueError(f"unknown block device {spec!r}: use 'memory' or 'file:PATH'")
