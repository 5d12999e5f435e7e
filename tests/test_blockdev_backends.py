"""Block device backends: both behave alike, refuse bad requests without side effects."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capkern.servers.blockdev._backends import (
    BackendIOError,
    BlockBackend,
    BlockDevError,
    DeviceClosed,
    FileBackend,
    MemoryBackend,
    Misaligned,
    OutOfRange,
    open_backend,
)

BS = 64
N = 8


def blk(fill: int) -> bytes:
    return bytes([fill]) * BS


@pytest.fixture(params=["memory", "file"])
def dev(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockBackend]:
    backend: BlockBackend
    if request.param == "memory":
        backend = MemoryBackend(N, BS)
    else:
        backend = FileBackend(tmp_path / "disk.img", N, BS)
    with backend:
        yield backend


def snapshot(dev: BlockBackend) -> list[bytes]:
    return [dev.read(i) for i in range(dev.nblocks)]


def test_round_trip_and_counters(dev: BlockBackend) -> None:
    dev.write(3, blk(7))
    assert dev.read(3) == blk(7)
    dev.write_many([(0, blk(1)), (7, blk(2))])
    assert dev.read_many([7, 0, 3]) == [blk(2), blk(1), blk(7)]
    assert dev.writes == 3 and dev.reads == 4


def test_unwritten_blocks_are_zero(dev: BlockBackend) -> None:
    assert snapshot(dev) == [bytes(BS)] * N


@pytest.mark.parametrize("lba", [-1, N, N + 100])
def test_out_of_range(dev: BlockBackend, lba: int) -> None:
    with pytest.raises(OutOfRange):
        dev.read(lba)
    with pytest.raises(OutOfRange):
        dev.write(lba, blk(1))
    with pytest.raises(OutOfRange):
        dev.trim(lba)
    assert snapshot(dev) == [bytes(BS)] * N


@pytest.mark.parametrize("data", [b"", b"x" * (BS - 1), b"x" * (BS + 1)])
def test_misaligned_write(dev: BlockBackend, data: bytes) -> None:
    with pytest.raises(Misaligned):
        dev.write(0, data)
    assert dev.read(0) == bytes(BS) and dev.writes == 0


@pytest.mark.parametrize("count", [0, -1])
def test_bad_trim_count(dev: BlockBackend, count: int) -> None:
    with pytest.raises(Misaligned):
        dev.trim(0, count)


def test_trim_past_end_refused(dev: BlockBackend) -> None:
    dev.write(N - 1, blk(5))
    with pytest.raises(OutOfRange):
        dev.trim(N - 2, 3)
    assert dev.read(N - 1) == blk(5)


@pytest.mark.parametrize(
    "bad", [(N, blk(9)), (1, b"short"), (-1, blk(9))], ids=["range", "size", "negative"]
)
def test_write_many_is_all_or_nothing(dev: BlockBackend, bad: tuple[int, bytes]) -> None:
    dev.write(0, blk(1))
    before = snapshot(dev)
    with pytest.raises(BlockDevError):
        dev.write_many([(0, blk(2)), (2, blk(3)), bad])
    assert snapshot(dev) == before


def test_read_many_checks_all_first(dev: BlockBackend) -> None:
    with pytest.raises(OutOfRange):
        dev.read_many([0, 1, N])
    assert dev.reads == 0


def test_trim_zeroes(dev: BlockBackend) -> None:
    dev.write_many([(i, blk(i + 1)) for i in range(N)])
    dev.trim(2, 3)
    got = snapshot(dev)
    assert got[2:5] == [bytes(BS)] * 3
    assert got[:2] == [blk(1), blk(2)] and got[5] == blk(6)
    assert dev.trims == 1


def test_flush(dev: BlockBackend) -> None:
    dev.write(1, blk(1))
    dev.flush()
    dev.flush()
    assert dev.flushes == 2


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
def test_non_integer_requests_refused(
    dev: BlockBackend, lba: object, count: object, exc: type[BlockDevError]
) -> None:
    """Untrusted peers may send anything: a wrong type is a BlockDevError, never TypeError."""
    with pytest.raises(exc):
        dev.trim(lba, count)  # type: ignore[arg-type]
    if exc is OutOfRange:  # the bad field is the address: writes are refused too
        with pytest.raises(exc):
            dev.write(lba, blk(1))  # type: ignore[arg-type]
    assert snapshot(dev) == [bytes(BS)] * N


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


def test_closed_device_refuses_everything(dev: BlockBackend) -> None:
    dev.close()
    dev.close()  # idempotent
    ops: list[Callable[[], object]] = [
        lambda: dev.read(0),
        lambda: dev.write(0, blk(1)),
        lambda: dev.flush(),
        lambda: dev.trim(0),
        lambda: dev.read_many([0]),
        lambda: dev.write_many([(0, blk(1))]),
    ]
    for op in ops:
        with pytest.raises(DeviceClosed):
            op()


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
