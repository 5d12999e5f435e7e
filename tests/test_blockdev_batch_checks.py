"""A batch's checks in one pass (``Geometry.check_reads``/``check_writes``) refuse exactly
what checking block by block refuses, with the same typed error; and the block device's
handlers that call a synchronous backend directly answer as the ``SyncBackend`` path
does, overridden primitives included (a malicious disk still lies)."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capkern.servers.blockdev._async import SyncBackend
from capkern.servers.blockdev._backends import BlockBackend, BlockDevError, MemoryBackend
from capkern.servers.blockdev._server import backend_handlers

BS = 64
N = 8


class Lba(enum.IntEnum):
    THREE = 3


lbas = st.one_of(st.integers(-3, N + 3), st.booleans(), st.just(1.0), st.just("2"),
                 st.none(), st.just(Lba.THREE), st.just(1 << 70))
datas = st.one_of(st.just(bytes(BS)), st.binary(max_size=BS + 2), st.just(bytearray(BS)),
                  st.just(memoryview(bytes(BS))), st.just("x" * BS), st.none())


def _outcome(check: Any, *args: Any) -> str:
    try:
        check(*args)
    except BlockDevError as exc:
        return type(exc).__name__
    return "ok"


def _one_by_one_reads(dev: MemoryBackend, batch: list[Any]) -> None:
    for lba in batch:
        dev.check(lba)


def _one_by_one_writes(dev: MemoryBackend, batch: list[tuple[Any, Any]]) -> None:
    for lba, data in batch:
        dev.check(lba)
        dev._check_data(data)


@given(batch=st.lists(lbas, max_size=5), closed=st.booleans())
def test_read_checks_agree_with_block_by_block(batch: list[Any], closed: bool) -> None:
    dev = MemoryBackend(N, BS)
    dev.closed = closed
    assert _outcome(dev.check_reads, batch) == _outcome(_one_by_one_reads, dev, batch)


@given(batch=st.lists(st.tuples(lbas, datas), max_size=5), closed=st.booleans())
def test_write_checks_agree_with_block_by_block(batch: list[tuple[Any, Any]],
                                                closed: bool) -> None:
    dev = MemoryBackend(N, BS)
    dev.closed = closed
    assert _outcome(dev.check_writes, batch) == _outcome(_one_by_one_writes, dev, batch)


class Liar(MemoryBackend):
    """Overrides the single-block primitives only, as the kit's malicious disks do."""

    def read(self, lba: int) -> bytes:
        return bytes(reversed(super().read(lba)))

    def write(self, lba: int, data: bytes) -> None:
        super().write(lba, data[::-1])


async def _answers(table: Any, requests: list[tuple[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for label, body in requests:
        try:
            out.append(await table[label](body))
        except Exception as exc:  # the server maps these to typed errors
            out.append(type(exc).__name__)
    return out


class _ViaAsync(SyncBackend):
    """Not exactly a SyncBackend: served through the asynchronous interface."""


@pytest.mark.parametrize("cls", [MemoryBackend, Liar])
async def test_direct_handlers_answer_as_the_async_path(cls: type[MemoryBackend]) -> None:
    requests: list[tuple[str, Any]] = [
        ("write", {"blocks": [[1, bytes(range(BS))], [2, b"\1" * BS]]}),
        ("read", {"lbas": [1, 2, 5]}),
        ("write", {"blocks": [[3, b"\3" * BS], [N, b"\4" * BS]]}),  # one out of range
        ("write", {"blocks": [[3, b"\3" * BS, b"extra"]]}),  # not a pair
        ("read", {"lbas": [3, -1]}),
        ("read", {"lbas": [True]}),
        ("stats", {}),
    ]
    direct, wrapped = cls(N, BS), cls(N, BS)
    got = await _answers(backend_handlers(direct), requests)
    assert got == await _answers(backend_handlers(_ViaAsync(wrapped)), requests)
    # the overridden primitives ran on the direct path: stored reversed, read back
    data = bytes(range(BS))
    assert direct._blocks[1] == (data if cls is MemoryBackend else data[::-1])
    assert got[1]["blocks"] == [data, b"\1" * BS, bytes(BS)]
    assert got[2:6] == ["OutOfRange", "ValueError", "OutOfRange", "OutOfRange"]
    assert got[6] == {"reads": 3, "writes": 2, "flushes": 0, "trims": 0}


@pytest.mark.parametrize("wrap", [False, True])
async def test_a_synchronous_backend_is_served_without_the_async_wrapper(
        wrap: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(self: SyncBackend, *args: Any) -> Any:
        raise AssertionError("went through SyncBackend")

    monkeypatch.setattr(SyncBackend, "read_many", never)
    monkeypatch.setattr(SyncBackend, "write_many", never)
    backend = MemoryBackend(N, BS)
    table = backend_handlers(SyncBackend(backend) if wrap else backend)
    await table["write"]({"blocks": [[1, b"\7" * BS]]})
    assert await table["read"]({"lbas": [1, 0]}) == {"blocks": [b"\7" * BS, bytes(BS)]}
    assert (backend.reads, backend.writes) == (2, 1)


def _effect(call: Any, dev: MemoryBackend, *args: Any) -> tuple[Any, ...]:
    try:
        got = call(dev, *args)
    except BlockDevError as exc:
        got = type(exc).__name__
    return got, dict(dev._blocks), dev.reads, dev.writes


@given(batches=st.lists(st.one_of(st.lists(lbas, max_size=4),
                                  st.lists(st.tuples(lbas, datas), max_size=4)), max_size=6))
def test_memory_batches_agree_with_the_block_by_block_path(batches: list[list[Any]]) -> None:
    """MemoryBackend's own read_many/write_many (straight to its dict) against the
    generic BlockBackend ones (through read/write, block by block)."""
    fast, slow = MemoryBackend(N, BS), MemoryBackend(N, BS)
    for batch in batches:
        if batch and isinstance(batch[0], tuple):
            assert _effect(MemoryBackend.write_many, fast, batch) == \
                _effect(BlockBackend.write_many, slow, batch)
        else:
            assert _effect(MemoryBackend.read_many, fast, batch) == \
                _effect(BlockBackend.read_many, slow, batch)
