"""The NBD block backend: Trio socket I/O around the sans-IO protocol (UNTRUSTED).

:class:`NBDBackend` opens one connection (TCP or Unix socket) to a real NBD server
(``nbdkit``, ``qemu-nbd``, ``nbd-server``), negotiates the export with
:class:`~._nbd_handshake.Handshake` and serves the block device interface over it.  A batch
is pipelined: every request of it is sent at once (consecutive blocks coalesced into one
request), then replies are read until every handle has been answered, in whatever order
the server answers.  One batch at a time holds the connection (a ``trio.Lock``), so no
background task is needed and nothing outlives a call.

A connection that fails mid-batch -- the server breaks the protocol, closes the socket,
or the batch is cancelled halfway -- is out of step: it is marked broken and never used
again, rather than risk matching a late reply to a new request.  The next request opens
a fresh connection (one attempt per request; a device made from a caller's stream
cannot, and fails with :class:`~._backends.BackendIOError`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import trio

from ..._nbdaddr import NBDAddress, parse_nbd_spec
from ._async import AsyncBlockBackend
from ._backends import BackendIOError, BlockDevError, Geometry
from ._nbd_handshake import Handshake
from ._nbd_proto import (
    TFLAG_READ_ONLY,
    TFLAG_SEND_FLUSH,
    TFLAG_SEND_WRITE_ZEROES,
    ExportInfo,
    NBDProtocolError,
    runs,
)
from ._nbd_transmission import Completed, Transmission

__all__ = ["LazyNBD", "NBDBackend", "open_nbd"]

_RECV = 256 * 1024
_CLOSE_GRACE = 1.0  # seconds allowed for a polite disconnect on close


async def _open_stream(address: NBDAddress) -> trio.SocketStream:
    try:
        if address.socket_path is not None:
            return await trio.open_unix_socket(address.socket_path)
        assert address.host is not None
        return await trio.open_tcp_stream(address.host, address.port)
    except OSError as exc:
        raise BackendIOError(f"cannot connect to {address}: {exc}") from None


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(_RECV))
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise BackendIOError(f"NBD connection lost: {exc}") from None


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    if data:
        try:
            await stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BackendIOError(f"NBD connection lost: {exc}") from None


class NBDBackend(AsyncBlockBackend):
    """Blocks ``0 .. nblocks-1`` of ``block_size`` bytes at the start of an NBD export.

    Build it with :meth:`connect` (or :func:`open_nbd`).  ``trim`` uses WRITE_ZEROES when
    the server offers it (NBD's TRIM leaves contents unspecified, and this interface
    promises zeros), else writes zero blocks.  ``flush`` is NBD FLUSH when offered.
    """

    def __init__(self, stream: trio.abc.Stream, info: ExportInfo, nblocks: int,
                 block_size: int, address: NBDAddress, *, structured: bool = True,
                 reconnect: bool = False) -> None:
        self.geometry = Geometry(nblocks, block_size)
        self.address = address
        self.info = info
        self.reconnects = 0
        self._stream = stream
        self._tx = Transmission(info)
        self._lock = trio.Lock()
        self._broken: str | None = None
        self._structured = structured
        self._reconnect = reconnect

    @classmethod
    async def connect(cls, address: NBDAddress | str, nblocks: int, block_size: int = 4096,
                      *, structured: bool = True) -> NBDBackend:
        """Connect, negotiate the export and check it can hold the device.

        A device built this way reconnects (once per request) after its connection broke,
        so a restarted server is used again; blocks it holds are whatever it kept.
        """
        addr = parse_nbd_spec(address) if isinstance(address, str) else address
        Geometry(nblocks, block_size)  # refuse a bad geometry before connecting
        stream = await _open_stream(addr)
        info = await _handshake(stream, addr, nblocks, block_size, structured)
        return cls(stream, info, nblocks, block_size, addr, structured=structured,
                   reconnect=True)

    @classmethod
    async def negotiate(cls, stream: trio.abc.Stream, address: NBDAddress, nblocks: int,
                        block_size: int = 4096, *, structured: bool = True) -> NBDBackend:
        """Run the handshake for ``address.export`` over an open ``stream`` (closed on
        failure) and check the export can hold the device.  No reconnection: the stream
        came from the caller."""
        info = await _handshake(stream, address, nblocks, block_size, structured)
        return cls(stream, info, nblocks, block_size, address, structured=structured)

    async def _revive(self) -> None:
        """Replace a broken connection by a fresh one, or raise BackendIOError."""
        why = self._broken
        if not self._reconnect:
            raise BackendIOError(f"NBD connection is unusable: {why}")
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
        try:
            stream = await _open_stream(self.address)
            info = await _handshake(stream, self.address, self.nblocks, self.block_size,
                                    self._structured)
        except BackendIOError as exc:  # BlockDevErrors of a changed export pass as they are
            raise BackendIOError(f"NBD connection is unusable: {why}; "
                                 f"reconnecting failed: {exc}") from None
        self._stream, self.info, self._tx = stream, info, Transmission(info)
        self._broken = None
        self.reconnects += 1

    # -- the exchange -----------------------------------------------------------------------

    async def _exchange(self, queue: Callable[[Transmission], list[int]]) -> list[Completed]:
        """Queue requests with ``queue``, send them, and wait for every answer.

        Returns the completions in the order of the handles ``queue`` returned; raises the
        first command error only after every reply is in (so the connection stays in step).
        A batch whose connection failed is sent once more on a fresh connection (when the
        device may reconnect): every request here is idempotent, so a batch that partly
        reached the disk is safe to repeat.
        """
        async with self._lock:
            for attempt in range(2):
                if self._broken is not None:
                    await self._revive()
                handles = queue(self._tx)
                try:
                    done = await self._round_trip(handles)
                    break
                except BackendIOError as exc:
                    self._broken = str(exc) or type(exc).__name__
                    if attempt or not self._reconnect:
                        raise
                except BaseException as exc:  # cancelled mid-batch: out of step, no retry
                    self._broken = str(exc) or type(exc).__name__
                    raise
            results = [done[h] for h in handles]
            for result in results:
                if result.error is not None:
                    raise result.error
            return results

    async def _round_trip(self, handles: list[int]) -> dict[int, Completed]:
        done: dict[int, Completed] = {}
        await _send(self._stream, self._tx.data_to_send())
        while len(done) < len(handles):
            event = self._tx.next_event()
            if event is None:
                self._tx.receive_data(await _receive(self._stream))
                continue
            if event.handle not in handles:
                raise NBDProtocolError(f"answer for handle {event.handle} not asked")
            done[event.handle] = event
        return done

    # -- the block device interface -----------------------------------------------------------

    def _requests(self, lbas_runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``(offset, length)`` requests for block runs, each within the payload limit."""
        bs = self.block_size
        per = max(1, self.info.max_payload // bs)
        out = []
        for first, count in lbas_runs:
            for start in range(first, first + count, per):
                n = min(per, first + count - start)
                out.append((start * bs, n * bs))
        return out

    async def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        for lba in lbas:
            self.geometry.check(lba)
        wanted = sorted(set(lbas))  # each block once, neighbours in one request
        reqs = self._requests(runs(wanted))
        results = await self._exchange(lambda tx: [tx.read(o, n) for o, n in reqs])
        bs = self.block_size
        got: dict[int, bytes] = {}
        for (offset, _), result in zip(reqs, results, strict=True):
            assert result.data is not None
            for i in range(0, len(result.data), bs):
                got[(offset + i) // bs] = result.data[i:i + bs]
        self.geometry.reads += len(lbas)
        return [got[lba] for lba in lbas]

    async def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        for lba, data in blocks:
            self.geometry.check(lba)
            self.geometry._check_data(data)
        # requests in flight may be carried out in any order: the last write of a block wins
        latest = {lba: bytes(data) for lba, data in blocks}
        order = sorted(latest)
        reqs = self._requests(runs(order))
        bs = self.block_size

        def queue(tx: Transmission) -> list[int]:
            return [tx.write(o, b"".join(latest[lba] for lba in
                                         range(o // bs, (o + n) // bs)))
                    for o, n in reqs]

        await self._exchange(queue)
        self.geometry.writes += len(blocks)

    async def flush(self) -> None:
        self.geometry.check(0)
        if self.info.has(TFLAG_SEND_FLUSH):
            await self._exchange(lambda tx: [tx.flush()])
        self.geometry.flushes += 1

    async def trim(self, lba: int, count: int = 1) -> None:
        self.geometry.check(lba, count)
        bs = self.block_size
        if self.info.has(TFLAG_SEND_WRITE_ZEROES):
            await self._exchange(lambda tx: [tx.write_zeroes(lba * bs, count * bs)])
        else:
            reqs = self._requests([(lba, count)])
            await self._exchange(lambda tx: [tx.write(o, bytes(n)) for o, n in reqs])
        self.geometry.trims += 1

    async def aclose(self) -> None:
        if self.geometry.closed:
            return
        self.geometry.closed = True
        with trio.CancelScope(shield=True):
            if self._broken is None and not self._lock.locked():
                self._tx.disconnect()
                with trio.move_on_after(_CLOSE_GRACE), contextlib.suppress(BackendIOError):
                    await _send(self._stream, self._tx.data_to_send())
            await self._stream.aclose()


async def _handshake(stream: trio.abc.Stream, address: NBDAddress, nblocks: int,
                     block_size: int, structured: bool) -> ExportInfo:
    """Negotiate ``address.export`` on ``stream`` (closed on any failure) and check it."""
    try:
        hs = Handshake(address.export, structured=structured)
        while not hs.done:
            await _send(stream, hs.data_to_send())
            hs.receive_data(await _receive(stream))
        await _send(stream, hs.data_to_send())
        assert hs.info is not None
        _check_export(hs.info, nblocks, block_size, address)
        if hs.trailing_data():
            raise NBDProtocolError("server sent data before any request")
        return hs.info
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise


def _check_export(info: ExportInfo, nblocks: int, block_size: int, addr: NBDAddress) -> None:
    """Refuse an export that cannot hold the device as asked."""
    need = nblocks * block_size
    if info.size < need:
        raise BlockDevError(f"NBD export {addr} has {info.size} bytes, the device needs {need}")
    if info.has(TFLAG_READ_ONLY):
        raise BlockDevError(f"NBD export {addr} is read-only")
    if block_size % info.min_block:
        raise BlockDevError(f"NBD export {addr} needs {info.min_block}-byte aligned requests")


class LazyNBD(AsyncBlockBackend):
    """An NBD device that connects on its first request, and again on a later one if that
    failed, so the block device domain lives and answers typed ``io`` errors while the
    server is unreachable (rather than dying, which would leave its callers waiting)."""

    def __init__(self, address: NBDAddress | str, nblocks: int, block_size: int = 4096) -> None:
        self.address = parse_nbd_spec(address) if isinstance(address, str) else address
        self.geometry = Geometry(nblocks, block_size)
        self.device: NBDBackend | None = None
        self._lock = trio.Lock()

    async def _device(self) -> NBDBackend:
        async with self._lock:
            if self.device is None:
                dev = await NBDBackend.connect(self.address, self.nblocks, self.block_size)
                dev.geometry = self.geometry  # one set of counters and one closed flag
                self.device = dev
            return self.device

    async def read_many(self, lbas: Sequence[int]) -> list[bytes]:
        for lba in lbas:
            self.geometry.check(lba)
        return await (await self._device()).read_many(lbas)

    async def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        for lba, data in blocks:
            self.geometry.check(lba)
            self.geometry._check_data(data)
        await (await self._device()).write_many(blocks)

    async def flush(self) -> None:
        self.geometry.check(0)
        await (await self._device()).flush()

    async def trim(self, lba: int, count: int = 1) -> None:
        self.geometry.check(lba, count)
        await (await self._device()).trim(lba, count)

    async def aclose(self) -> None:
        if self.geometry.closed:
            return
        if self.device is not None:
            await self.device.aclose()  # marks the shared geometry closed
        self.geometry.closed = True


def open_nbd(spec: str, nblocks: int, block_size: int = 4096) -> LazyNBD:
    """The NBD device named by ``spec`` (``nbd://`` or ``nbd+unix://``), connected on
    first use."""
    return LazyNBD(spec, nblocks, block_size)
