"""Block device backends: memory, file and NBD behave alike, refuse bad requests without
side effects.

The shared suite runs against every backend through the asynchronous interface the block
device server serves (the synchronous ones through ``SyncBackend``); the NBD backend (as
connected up front, and as the block device server opens it: on first use) talks to a
real ``nbdkit`` on a Unix socket, and skips (saying why) where nbdkit is missing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from capkern.servers.blockdev._async import AsyncBlockBackend, SyncBackend
from capkern.servers.blockdev._backends import (
    BackendIOError,
    BlockDevError,
    DeviceClosed,
    FileBackend,
    MemoryBackend,
    Misaligned,
    OutOfRange,
    open_backend,
)
from capkern.servers.blockdev._nbd import LazyNBD, NBDBackend
from capkern.testing.nbdkit import nbdkit_path, nbdkit_server

BS = 64
N = 8


def blk(fill: int) -> bytes:
    return bytes([fill]) * BS


BACKENDS = ["memory", "file", "nbd", "nbd-lazy"]


@pytest.fixture(params=BACKENDS)
async def dev(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncBlockBackend]:
    if request.param == "memory":
        async with SyncBackend(MemoryBackend(N, BS)) as backend:
            yield backend
    elif request.param == "file":
        async with SyncBackend(FileBackend(tmp_path / "disk.img", N, BS)) as backend:
            yield backend
    else:
        if nbdkit_path() is None:
            pytest.skip("nbdkit is not installed: the NBD backend needs a real NBD server "
                        "(apt-get install nbdkit)")
        async with nbdkit_server(N * BS) as server:
            nbd = (await NBDBackend.connect(server.spec, N, BS) if request.param == "nbd"
                   else LazyNBD(server.spec, N, BS))  # connects at its first request
            async with nbd:
                yield nbd


async def snapshot(dev: AsyncBlockBackend) -> list[bytes]:
    return [await dev.read(i) for i in range(dev.nblocks)]


async def test_round_trip_and_counters(dev: AsyncBlockBackend) -> None:
    await dev.write(3, blk(7))
    assert await dev.read(3) == blk(7)
    await dev.write_many([(0, blk(1)), (7, blk(2))])
    assert await dev.read_many([7, 0, 3]) == [blk(2), blk(1), blk(7)]
    assert dev.counters()["writes"] == 3 and dev.counters()["reads"] == 4


async def test_unwritten_blocks_are_zero(dev: AsyncBlockBackend) -> None:
    assert await snapshot(dev) == [bytes(BS)] * N


@pytest.mark.parametrize("lba", [-1, N, N + 100])
async def test_out_of_range(dev: AsyncBlockBackend, lba: int) -> None:
    with pytest.raises(OutOfRange):
        await dev.read(lba)
    with pytest.raises(OutOfRange):
        await dev.write(lba, blk(1))
    with pytest.raises(OutOfRange):
        await dev.trim(lba)
    assert await snapshot(dev) == [bytes(BS)] * N


@pytest.mark.parametrize("data", [b"", b"x" * (BS - 1), b"x" * (BS + 1)])
async def test_misaligned_write(dev: AsyncBlockBackend, data: bytes) -> None:
    with pytest.raises(Misaligned):
        await dev.write(0, data)
    assert await dev.read(0) == bytes(BS) and dev.counters()["writes"] == 0


@pytest.mark.parametrize("count", [0, -1])
async def test_bad_trim_count(dev: AsyncBlockBackend, count: int) -> None:
    with pytest.raises(Misaligned):
        await dev.trim(0, count)


async def test_trim_past_end_refused(dev: AsyncBlockBackend) -> None:
    await dev.write(N - 1, blk(5))
    with pytest.raises(OutOfRange):
        await dev.trim(N - 2, 3)
    assert await dev.read(N - 1) == blk(5)


@pytest.mark.parametrize(
    "bad", [(N, blk(9)), (1, b"short"), (-1, blk(9))], ids=["range", "size", "negative"]
)
async def test_write_many_is_all_or_nothing(dev: AsyncBlockBackend, bad: tuple[int, bytes]) -> None:
    await dev.write(0, blk(1))
    before = await snapshot(dev)
    with pytest.raises(BlockDevError):
        await dev.write_many([(0, blk(2)), (2, blk(3)), bad])
    assert await snapshot(dev) == before


async def test_read_many_checks_all_first(dev: AsyncBlockBackend) -> None:
    with pytest.raises(OutOfRange):
        await dev.read_many([0, 1, N])
    assert dev.counters()["reads"] == 0


async def test_trim_zeroes(dev: AsyncBlockBackend) -> None:
    await dev.write_many([(i, blk(i + 1)) for i in range(N)])
    await dev.trim(2, 3)
    got = await snapshot(dev)
    assert got[2:5] == [bytes(BS)] * 3
    assert got[:2] == [blk(1), blk(2)] and got[5] == blk(6)
    assert dev.counters()["trims"] == 1


async def test_flush(dev: AsyncBlockBackend) -> None:
    await dev.write(1, blk(1))
    await dev.flush()
    await dev.flush()
    assert dev.counters()["flushes"] == 2


@pytest.mark.parametrize(
    ("lba", "count", "exc"),
    [
        ("1", 1, OutOfRange),
        (1.0, 1, OutOfRange),
        (True, 1, OutOfRange),
        (None, 1, OutOfRange),
        (0, "2", Misaligned),
        (0, 1.5, Misaligned),
        (0, True, Misaligned),
    ],
)
async def test_non_integer_requests_refused(
    dev: AsyncBlockBackend, lba: object, count: object, exc: type[BlockDevError]
) -> None:
    """Untrusted peers may send anything: a wrong type is a BlockDevError, never TypeError."""
    with pytest.raises(exc):
        await dev.trim(lba, count)  # type: ignore[arg-type]
    if exc is OutOfRange:  # the bad field is the address: writes are refused too
        with pytest.raises(exc):
            await dev.write(lba, blk(1))  # type: ignore[arg-type]
    assert await snapshot(dev) == [bytes(BS)] * N


def test_file_flush_calls_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with FileBackend(tmp_path / "disk.img", N, BS) as dev:
        dev.flush()
    assert len(synced) == 1


def _fail(*_args: object) -> object:
    raise OSError(5, "Input/output error")


@pytest.mark.parametrize(
    ("func", "fake", "op"),
    [
        ("pread", lambda fd, n, off: b"x" * (n - 1), "read"),
        ("pread", _fail, "read"),
        ("pwrite", lambda fd, data, off: len(data) - 1, "write"),
        ("pwrite", _fail, "write"),
        ("pwrite", _fail, "trim"),
        ("fsync", _fail, "flush"),
    ],
    ids=[
        "short-read",
        "read-oserror",
        "short-write",
        "write-oserror",
        "trim-oserror",
        "fsync-oserror",
    ],
)
def test_file_medium_errors_are_backend_io_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    func: str,
    fake: Callable[..., object],
    op: str,
) -> None:
    with FileBackend(tmp_path / "disk.img", N, BS) as dev:
        monkeypatch.setattr(os, func, fake)
        calls: dict[str, Callable[[], object]] = {
            "read": lambda: dev.read(0),
            "write": lambda: dev.write(0, blk(1)),
            "trim": lambda: dev.trim(0),
            "flush": dev.flush,
        }
        with pytest.raises(BackendIOError):
            calls[op]()
        monkeypatch.undo()
        assert dev.reads == dev.writes == dev.flushes == dev.trims == 0


async def test_closed_device_refuses_everything(dev: AsyncBlockBackend) -> None:
    await dev.aclose()
    await dev.aclose()  # idempotent
    ops: list[Callable[[], Awaitable[object]]] = [
        lambda: dev.read(0),
        lambda: dev.write(0, blk(1)),
        lambda: dev.flush(),
        lambda: dev.trim(0),
        lambda: dev.read_many([0]),
        lambda: dev.write_many([(0, blk(1))]),
    ]
    for op in ops:
        with pytest.raises(DeviceClosed):
            await op()
    assert dev.closed


def test_file_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with FileBackend(path, N, BS) as dev:
        dev.write(4, blk(4))
        dev.flush()
    assert os.path.getsize(path) == N * BS
    with FileBackend(path, N, BS, create=False) as dev:
        assert dev.read(4) == blk(4)
        assert dev.read(5) == bytes(BS)


def test_file_wrong_size_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    FileBackend(path, N, BS).close()
    with pytest.raises(BlockDevError, match="expected"):
        FileBackend(path, N + 1, BS, create=False)
    with pytest.raises(BlockDevError, match="expected"):
        FileBackend(path, N, BS * 2, create=False)


def test_file_missing_is_io_error(tmp_path: Path) -> None:
    with pytest.raises(BlockDevError):
        FileBackend(tmp_path / "nope.img", N, BS, create=False)


def test_file_create_truncates(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with FileBackend(path, N, BS) as dev:
        dev.write(0, blk(1))
    with FileBackend(path, N, BS) as dev:
        assert dev.read(0) == bytes(BS)


def test_invalid_geometry() -> None:
    with pytest.raises(ValueError):
        MemoryBackend(0)
    with pytest.raises(ValueError):
        MemoryBackend(1, 0)


def test_open_backend(tmp_path: Path) -> None:
    mem = open_backend("memory", 4, BS)
    assert isinstance(mem, MemoryBackend) and mem.nblocks == 4 and mem.block_size == BS
    path = tmp_path / "d.img"
    with open_backend(f"file:{path}", 4, BS) as f:
        assert isinstance(f, FileBackend)
        assert os.path.getsize(path) == 4 * BS


@pytest.mark.parametrize("spec", ["", "file:", "disk", "Memory", "nfs:/x"])
def test_open_backend_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        open_backend(spec, 4)
