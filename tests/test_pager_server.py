"""The honest pager through its real PAGER contract, in its own domain with its own block
device, driven by a client domain as the kernel drives it: copy-on-write stores, a full
or failing disk, batch edge cases, a garbage-choosing policy."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import Kernel, boot
from capkern._config import Grant
from capkern._cspace import Rights
from capkern._pagefmt import META_LEN, PAGE_SIZE, SEALED_LEN, split_blob
from capkern._proc import Process
from capkern._protocols import BLOCKDEV, MAX_BATCH, PAGER
from capkern.errors import ContractViolation
from capkern.servers.blockdev import BackendIOError, MemoryBackend
from capkern.servers.pager import FIFOPolicy, Pager

from .helpers import (
    _alive,
    _blob,
    _call,
    _reason,
    _run_client,
    _start_blockdev,
    _start_pager,
)


class FlakyDisk(MemoryBackend):
    """A memory disk whose writes fail on demand after ``land`` blocks of a batch landed."""

    def __init__(self, nblocks: int) -> None:
        super().__init__(nblocks)
        self.fail_next_batch = False
        self.land = 0
        self.read_size: int | None = None  # answer reads with blocks of this many bytes
        self.read_none = False  # answer reads with no blocks at all

    def write_many(self, blocks: Any) -> None:
        if not self.fail_next_batch:
            super().write_many(blocks)
            return
        self.fail_next_batch = False
        for lba, data in list(blocks)[: self.land]:
            self.write(lba, data)
        raise BackendIOError("medium error half-way through the batch")

    def read_many(self, lbas: Any) -> list[bytes]:
        blocks = super().read_many(lbas)
        if self.read_none:
            return []
        if self.read_size is not None:
            return [(b * 2)[: self.read_size] for b in blocks]
        return blocks


async def test_pager_failed_store_keeps_the_previous_copy_and_frees_new_slots(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    disk = FlakyDisk(64)
    k = bare_kernel
    ep = _start_pager(k, disk)

    async def client(proc: Process) -> Any:
        await _call(proc, "store", {"pages": [[1, _blob(1)], [2, _blob(2)]]})
        before = await _call(proc, "stats", {})
        for land in range(0, 5):  # the write batch fails after 0..4 blocks landed
            disk.fail_next_batch, disk.land = True, land
            reason = await _reason(proc, "store",
                                   {"pages": [[1, _blob(10 + land)], [3, _blob(3)]]})
            assert reason == "io"
            # the store failed: the pager hands back exactly the copy it had...
            assert (await _call(proc, "fetch", {"handle": 1}))["blob"] == _blob(1)
            assert (await _call(proc, "fetch", {"handle": 2}))["blob"] == _blob(2)
            # ...and holds nothing for a handle it never stored
            assert await _reason(proc, "fetch", {"handle": 3}) == "not_found"
            assert (await _call(proc, "stats", {}))["swap_used"] == before["swap_used"]
        # a later store of the same pages works and replaces the copy
        await _call(proc, "store", {"pages": [[1, _blob(20)], [3, _blob(3)]]})
        assert (await _call(proc, "fetch", {"handle": 1}))["blob"] == _blob(20)
        assert (await _call(proc, "fetch", {"handle": 3}))["blob"] == _blob(3)
        return (await _call(proc, "stats", {}))["swap_used"]

    assert await _run_client(k, {"svc": ep}, client) == 3
    assert _alive(k, "pager")


@pytest.mark.parametrize(("fault", "value"), [
    *[("read_size", size) for size in (0, PAGE_SIZE - 1, PAGE_SIZE + 1, 3 * SEALED_LEN)],
    ("read_none", True),  # a read answered with no blocks at all
])
async def test_pager_refuses_a_bad_disk_read(
        fault: str, value: object, autojump_clock: trio.testing.MockClock,
        bare_kernel: Kernel) -> None:
    disk = FlakyDisk(64)
    k = bare_kernel
    ep = _start_pager(k, disk)

    async def client(proc: Process) -> Any:
        await _call(proc, "store", {"pages": [[5, _blob(5)]]})
        healthy = getattr(disk, fault)
        setattr(disk, fault, value)
        reason = await _reason(proc, "fetch", {"handle": 5})
        setattr(disk, fault, healthy)
        return reason, (await _call(proc, "fetch", {"handle": 5}))["blob"]

    assert await _run_client(k, {"svc": ep}, client) == ("io", _blob(5))
    assert _alive(k, "pager")


async def test_pager_survives_its_disk_dying_mid_call(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    k = bare_kernel
    disk = k.new_endpoint("blockdev", BLOCKDEV)

    async def dying_disk(proc: Process) -> None:
        backend = MemoryBackend(64)
        while True:
            msg = await proc.recv("service")
            if msg.label == "read":  # dies holding the pager's call
                raise RuntimeError("disk controller on fire")
            if msg.label == "info":
                proc.reply("ok", {"block_size": 4096, "nblocks": 64})
            else:
                backend.write_many([(lba, d) for lba, d in msg.body["blocks"]])
                proc.reply("ok", None)

    k.spawn(dying_disk, name="blockdev", kind="server",
            caps={"service": Grant(disk, Rights.READ)})
    ep = k.new_endpoint("pager", PAGER)

    async def pager(proc: Process) -> None:
        await Pager(proc, FIFOPolicy()).serve()

    k.spawn(pager, name="pager", kind="server",
            caps={"service": Grant(ep, Rights.READ), "blockdev": Grant(disk, Rights.WRITE)})

    async def client(proc: Process) -> Any:
        await _call(proc, "store", {"pages": [[5, _blob(5)]]})
        return await _reason(proc, "fetch", {"handle": 5})

    assert await _run_client(k, {"svc": ep}, client) == "io"
    assert _alive(k, "pager")


async def test_pager_store_when_full_is_typed_and_partial_batches_say_what_was_stored(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    disk = FlakyDisk(4)  # 1 metadata block + 3 slots
    k = bare_kernel
    ep = _start_pager(k, disk)

    async def client(proc: Process) -> Any:
        got = await _call(proc, "store", {"pages": [[1, _blob(1)], [2, _blob(2)]]})
        assert got["stored"] == [1, 2]
        got = await _call(proc, "store", {"pages": [[3, _blob(3)], [4, _blob(4)]]})
        assert got["stored"] == [3]  # 4 found no slot, and the reply says so
        assert await _reason(proc, "store", {"pages": [[4, _blob(4)]]}) == "no_space"
        assert await _reason(proc, "fetch", {"handle": 4}) == "not_found"
        # a full swap still takes new copies of pages it holds (rewritten in place)
        got = await _call(proc, "store", {"pages": [[9, _blob(9)], [2, _blob(22)]]})
        assert got["stored"] == [2]
        blobs = [(await _call(proc, "fetch", {"handle": h}))["blob"] for h in (1, 2, 3)]
        assert blobs == [_blob(1), _blob(22), _blob(3)]
        # an in-place rewrite that fails drops the page: refused, never a mixed blob
        disk.fail_next_batch, disk.land = True, 1
        assert await _reason(proc, "store", {"pages": [[2, _blob(23)]]}) == "io"
        assert await _reason(proc, "fetch", {"handle": 2}) == "not_found"
        # and its slot is free again
        assert (await _call(proc, "store", {"pages": [[4, _blob(4)]]}))["stored"] == [4]
        return (await _call(proc, "fetch", {"handle": 4}))["blob"]

    assert await _run_client(k, {"svc": ep}, client) == _blob(4)


async def test_pager_batch_edge_cases(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    k = bare_kernel
    ep = _start_pager(k, FlakyDisk(2 * MAX_BATCH + 2))

    async def client(proc: Process) -> Any:
        # a handle named twice in one batch: its last copy is the one kept
        got = await _call(proc, "store", {"pages": [[7, _blob(1)], [8, _blob(8)],
                                                    [7, _blob(2)]]})
        assert sorted(got["stored"]) == [7, 8]
        assert (await _call(proc, "fetch", {"handle": 7}))["blob"] == _blob(2)
        assert (await _call(proc, "stats", {}))["swap_used"] == 2
        # the largest batch, then every page comes back exactly
        pages = [[100 + i, _blob(100 + i)] for i in range(MAX_BATCH)]
        assert (await _call(proc, "store", {"pages": pages}))["stored"] == \
            [h for h, _ in pages]
        for h, blob in pages:
            assert (await _call(proc, "fetch", {"handle": h}))["blob"] == blob
        # empty and oversized batches never reach the pager
        for bad in ([], [[1, _blob(1)]] * (MAX_BATCH + 1), [[1, _blob(1)[:-1]]],
                    [[-1, _blob(1)]], [[1 << 63, _blob(1)]]):
            with pytest.raises(ContractViolation):
                await _call(proc, "store", {"pages": bad})
        # discard: unknown handles are fine, discarded pages are gone, handles reusable
        assert await _call(proc, "discard", {"handles": [7, 123456, 7]}) is None
        assert await _reason(proc, "fetch", {"handle": 7}) == "not_found"
        assert await _reason(proc, "fetch", {"handle": 999}) == "not_found"
        await _call(proc, "store", {"pages": [[7, _blob(77)]]})
        assert (await _call(proc, "fetch", {"handle": 7}))["blob"] == _blob(77)
        stats = await _call(proc, "stats", {})
        assert stats["swap_used"] == 2 + MAX_BATCH
        return stats["not_found"]

    assert await _run_client(k, {"svc": ep}, client) == 2
    assert _alive(k, "pager")


async def test_pager_rewrite_frees_the_previous_slot(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    disk = FlakyDisk(5)  # 1 metadata block + 4 slots
    k = bare_kernel
    ep = _start_pager(k, disk)

    async def client(proc: Process) -> Any:
        for round_ in range(10):  # rewriting never leaks slots
            await _call(proc, "store", {"pages": [[1, _blob(round_)], [2, _blob(50)]]})
            assert (await _call(proc, "stats", {}))["swap_used"] == 2
        await _call(proc, "store", {"pages": [[3, _blob(3)], [4, _blob(4)]]})
        return [(await _call(proc, "fetch", {"handle": h}))["blob"] for h in (1, 2, 3, 4)]

    assert await _run_client(k, {"svc": ep}, client) == \
        [_blob(9), _blob(50), _blob(3), _blob(4)]


async def test_pager_never_writes_more_than_the_blobs_it_is_given(
        autojump_clock: trio.testing.MockClock) -> None:
    # every byte on the disk is a piece of a sealed blob: ciphertext or nonce || tag
    disk = FlakyDisk(16)
    async with boot(paging=False) as k:
        ep = _start_pager(k, disk)

        async def client(proc: Process) -> Any:
            await _call(proc, "store", {"pages": [[h, _blob(h)] for h in range(1, 6)]})
            return None

        await _run_client(k, {"svc": ep}, client)
    pieces = {part for h in range(1, 6) for part in split_blob(_blob(h))}
    meta = disk.read(0)
    entries = [meta[i: i + META_LEN] for i in range(0, 5 * META_LEN, META_LEN)]
    assert all(e[:12] in pieces and e[12:] in pieces for e in entries)
    assert not any(meta[5 * META_LEN:])
    assert all(disk.read(lba) in pieces for lba in range(1, 6))


@pytest.mark.parametrize(("nblocks", "block_size"), [(64, 512), (64, 16), (1, 4096), (8, 8192)])
async def test_pager_with_an_unusable_disk_keeps_serving_typed_errors(
        nblocks: int, block_size: int, autojump_clock: trio.testing.MockClock,
        bare_kernel: Kernel) -> None:
    k = bare_kernel
    ep = _start_pager(k, MemoryBackend(nblocks, block_size=block_size))

    async def client(proc: Process) -> Any:
        store = await _reason(proc, "store", {"pages": [[1, _blob(1)]]})
        fetch = await _reason(proc, "fetch", {"handle": 1})
        await _call(proc, "discard", {"handles": [1]})
        stats = await _call(proc, "stats", {})
        return store, fetch, stats["swap_used"]

    assert await _run_client(k, {"svc": ep}, client) == ("io", "not_found", 0)
    assert _alive(k, "pager")


async def test_pager_survives_a_policy_that_chooses_garbage(
        autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    class Garbage(FIFOPolicy):
        def choose(self, n: int) -> list[int]:
            good = super().choose(n)
            return [True, -1, 1 << 63, "x", *good, *good, *good]  # type: ignore[list-item]

    k = bare_kernel
    disk = _start_blockdev(k, MemoryBackend(8))
    ep = k.new_endpoint("pager", PAGER)

    async def pager(proc: Process) -> None:
        await Pager(proc, Garbage()).serve()

    k.spawn(pager, name="pager", kind="server",
            caps={"service": Grant(ep, Rights.READ), "blockdev": Grant(disk, Rights.WRITE)})

    async def client(proc: Process) -> Any:
        return await _call(proc, "evict", {"n": 2, "mapped": [5, 6, 7], "referenced": [],
                                           "dirty": []})

    assert await _run_client(k, {"svc": ep}, client) == {"victims": [5, 6]}
    assert _alive(k, "pager")


def test_pager_handlers_are_its_on_methods_and_a_subclass_adds_labels() -> None:
    class Counting(Pager):
        async def on_ping(self, body: Any) -> Any:
            return "pong"

    table = Counting(None, FIFOPolicy()).handlers()  # type: ignore[arg-type]
    assert {"discard", "evict", "fetch", "stats", "store"} <= set(table)
    assert sorted(table) == sorted({*PAGER.ops, "ping"})  # the contract, exactly, plus ping
