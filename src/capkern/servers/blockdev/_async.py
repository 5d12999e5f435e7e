"""Asynchronous block backends: the interface the block device server serves (UNTRUSTED).

A backend that waits on the network (NBD) must not block the event loop, so the server
speaks to every backend through :class:`AsyncBlockBackend`.  Synchronous backends
(memory, file, the malicious disks of the adversarial kit) are served through
:class:`SyncBackend`, which calls them directly: their operations are short and never
wait on anything outside the process.  Both kinds share one :class:`Geometry`, so they
refuse exactly the same bad requests with the same typed errors.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from ._backends import BlockBackend, Geometry

__all__ = ["AsyncBlockBackend", "SyncBackend", "as_async"]


class AsyncBlockBackend(abc.ABC):
    """``nblocks`` blocks of ``block_size`` bytes behind awaitable operations.

    Range, size and type checks, the ``closed`` state and the counters live in
    :attr:`geometry`; every batch operation checks all of its blocks before doing
    anything, so a bad request changes nothing.
    """

    geometry: Geometry

    @property
    def nblocks(self) -> int:
        """Number of blocks."""
        return self.geometry.nblocks

    @property
    def block_size(self) -> int:
        """Bytes per block."""
        return self.geometry.block_size

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self.geometry.closed

    def counters(self) -> dict[str, int]:
        """Blocks read and written, flushes and trims done (the server's ``stats``)."""
        g = self.geometry
        return {"reads": g.reads, "writes": g.writes, "flushes": g.flushes, "trims": g.trims}

    @abc.abstractmethod
    async def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        """Several blocks, in the order asked (zeros where never written)."""

    @abc.abstractmethod
    async def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """Write every ``(lba, data)``; all are checked before any is written."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Make every completed write durable."""

    @abc.abstractmethod
    async def trim(self, lba: int, count: int = 1) -> None:
        """Discard ``count`` blocks from ``lba``: they read as zeros afterwards."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the medium; idempotent.  Later requests raise ``DeviceClosed``."""

    async def read(self, lba: int) -> bytes:
        """Block ``lba``."""
        return (await self.read_many([lba]))[0]

    async def write(self, lba: int, data: bytes) -> None:
        """Replace block ``lba`` with ``data`` (exactly one block)."""
        await self.write_many([(lba, data)])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class SyncBackend(AsyncBlockBackend):
    """A synchronous :class:`BlockBackend` seen through the asynchronous interface."""

    def __init__(self, backend: BlockBackend) -> None:
        self.backend = backend
        self.geometry = backend

    async def read(self, lba: int) -> bytes:
        return self.backend.read(lba)

    async def write(self, lba: int, data: bytes) -> None:
        self.backend.write(lba, data)

    async def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        return self.backend.read_many(lbas)

    async def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        self.backend.write_many(blocks)

    async def flush(self) -> None:
        self.backend.flush()

    async def trim(self, lba: int, count: int = 1) -> None:
        self.backend.trim(lba, count)

    async def aclose(self) -> None:
        self.backend.close()


def as_async(backend: BlockBackend | AsyncBlockBackend) -> AsyncBlockBackend:
    """``backend`` itself if it is asynchronous, else wrapped in :class:`SyncBackend`."""
    return backend if isinstance(backend, AsyncBlockBackend) else SyncBackend(backend)
