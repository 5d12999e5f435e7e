"""The block device server through its real BLOCKDEV contract, in its own domain, driven by
a client domain as the pager drives it: boundaries, and answers too big to cross."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import Kernel, boot
from capkern._proc import Process
from capkern.errors import CapkernError, ContractViolation
from capkern.servers.blockdev import BlockBackend, MemoryBackend

from .helpers import (
    _alive,
    _call,
    _reason,
    _run_client,
    _start_blockdev,
)


async def test_blockdev_read_too_big_for_one_reply_is_refused_and_server_survives(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    # 256 blocks of 4 KiB are a valid request but cannot fit one 1 MiB reply
    k = bare_kernel
    ep = _start_blockdev(k, MemoryBackend(512))

    async def client(proc: Process) -> Any:
        with pytest.raises(CapkernError):
            await _call(proc, "read", {"lbas": list(range(256))})
        blocks = await _call(proc, "read", {"lbas": [0, 511]})
        return blocks["blocks"]

    assert await _run_client(k, {"svc": ep}, client) == [bytes(4096)] * 2
    assert _alive(k, "blockdev")


@pytest.mark.parametrize("backend", ["memory", "file"])
async def test_blockdev_boundaries_through_the_contract(
        backend: str, tmp_path: Any, autojump_clock: trio.testing.MockClock) -> None:
    from capkern.servers.blockdev import FileBackend

    n, bs = 8, 4096
    dev: BlockBackend = MemoryBackend(n, bs) if backend == "memory" \
        else FileBackend(tmp_path / "disk.img", n, bs)
    async with boot(paging=False) as k:
        ep = _start_blockdev(k, dev)

        async def client(proc: Process) -> Any:
            one = bytes([7]) * bs
            assert await _call(proc, "info", {}) == {"block_size": bs, "nblocks": n}
            await _call(proc, "write", {"blocks": [[0, one], [n - 1, one]]})
            assert (await _call(proc, "read", {"lbas": [n - 1, 0]}))["blocks"] == [one, one]
            # past the end: refused, and nothing of the batch is written
            assert await _reason(proc, "write", {"blocks": [[1, one], [n, one]]}) == "range"
            assert await _reason(proc, "read", {"lbas": [0, n]}) == "range"
            # not exactly one block: refused, and nothing of the batch is written
            for size in (0, bs - 1, bs + 1):
                reason = await _reason(proc, "write", {"blocks": [[2, one], [3, b"x" * size]]})
                assert reason == "misaligned"
            assert (await _call(proc, "read", {"lbas": [1, 2, 3]}))["blocks"] == [bytes(bs)] * 3
            # trim: the last block is fine, one more is out of range and changes nothing
            assert await _reason(proc, "trim", {"lba": n - 1, "count": 2}) == "range"
            assert (await _call(proc, "read", {"lbas": [n - 1]}))["blocks"] == [one]
            await _call(proc, "trim", {"lba": n - 1, "count": 1})
            assert (await _call(proc, "read", {"lbas": [n - 1]}))["blocks"] == [bytes(bs)]
            await _call(proc, "flush", {})
            for bad in ({"lba": 0, "count": 0}, {"lba": -1, "count": 1}, {"lba": 0}):
                with pytest.raises(ContractViolation):
                    await _call(proc, "trim", bad)
            with pytest.raises(ContractViolation):
                await _call(proc, "read", {"lbas": []})
            return await _call(proc, "stats", {})

        stats = await _run_client(k, {"svc": ep}, client)
        assert stats["flushes"] == 1 and stats["trims"] == 1
        assert _alive(k, "blockdev")
    dev.close()
