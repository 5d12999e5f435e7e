"""A backend that extends ``check`` (a bad-sector map, a read-only region) is asked about
every block of a batch: the batch checks skip the per-block call only for a backend whose
``check`` is the built-in one.  A refused block fails the whole batch before any block is
read or written, as a single ``read``/``write`` would fail -- for the memory backend's
direct path and the generic one, through the server's handlers as well."""

from __future__ import annotations

import pytest

from capkern.servers.blockdev._backends import (
    BackendIOError,
    BlockBackend,
    FileBackend,
    MemoryBackend,
)
from capkern.servers.blockdev._server import backend_handlers

BAD = 3


class BadSectorMemory(MemoryBackend):
    def check(self, lba: int, count: int = 1) -> None:
        super().check(lba, count)
        if lba <= BAD < lba + count:
            raise BackendIOError(f"bad sector {BAD}")


def _file_backend(tmp_path: object) -> BlockBackend:
    class BadSectorFile(FileBackend):
        def check(self, lba: int, count: int = 1) -> None:
            super().check(lba, count)
            if lba <= BAD < lba + count:
                raise BackendIOError(f"bad sector {BAD}")

    return BadSectorFile(f"{tmp_path}/disk", 8, 64, create=True)


@pytest.fixture(params=["memory", "file"])
def device(request: pytest.FixtureRequest, tmp_path: object) -> BlockBackend:
    return BadSectorMemory(8, 64) if request.param == "memory" else _file_backend(tmp_path)


def test_single_block_calls_refuse_the_bad_sector(device: BlockBackend) -> None:
    with pytest.raises(BackendIOError):
        device.read(BAD)
    with pytest.raises(BackendIOError):
        device.write(BAD, bytes(64))


def test_a_batch_with_the_bad_sector_is_refused_whole(device: BlockBackend) -> None:
    device.write(1, b"\x01" * 64)
    with pytest.raises(BackendIOError):
        device.read_many([1, BAD])
    with pytest.raises(BackendIOError):
        device.write_many([(1, b"\x02" * 64), (BAD, b"\x02" * 64)])
    assert device.read(1) == b"\x01" * 64  # nothing of the refused batch was written


async def test_the_servers_handlers_refuse_it_too(device: BlockBackend) -> None:
    table = backend_handlers(device)
    with pytest.raises(BackendIOError):
        await table["read"]({"lbas": [0, BAD]})
    with pytest.raises(BackendIOError):
        await table["write"]({"blocks": [[BAD, bytes(64)]]})
