"""The NBD backend's connection handling against a scripted server on an in-memory stream.

A real server (nbdkit) is honest; this one is written here to misbehave on cue: answer a
pipelined batch in reverse, fail one command, cut the connection in the middle of a
reply, stall.  The backend must match answers by handle, keep the connection in step
after a command error, and refuse to reuse a connection that fell out of step.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from capkern._nbdaddr import NBDAddress
from capkern.servers.blockdev import _nbd_proto as p
from capkern.servers.blockdev._backends import BackendIOError, BlockDevError, DeviceClosed
from capkern.servers.blockdev._nbd import NBDBackend
from capkern.servers.blockdev._nbd_proto import NBDCommandError

BS = 512
N = 16
FLAGS = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH | p.TFLAG_SEND_WRITE_ZEROES


@dataclass
class Request:
    cmd: int
    handle: int
    offset: int
    length: int
    flags: int
    payload: bytes = b""


@dataclass
class FakeServer:
    """A simple-reply NBD server over one stream, with hooks to misbehave."""

    size: int = N * BS
    flags: int = FLAGS
    block_info: tuple[int, int, int] | None = None
    reverse: bool = False
    fail: Callable[[Request], int] = lambda r: 0
    cut_after: int | None = None  # bytes of reply to send before closing, once
    stall: bool = False
    data: bytearray = field(default_factory=bytearray)
    seen: list[Request] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = bytearray(self.size)

    async def serve(self, stream: trio.abc.Stream) -> None:
        buf = bytearray()

        async def need(n: int) -> bytes | None:
            while len(buf) < n:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return None
                buf.extend(chunk)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        await stream.send_all(struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT,
                                          p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES))
        await need(4)
        while True:
            head = await need(16)
            assert head is not None
            _, option, length = struct.unpack(">QII", head)
            await need(length)
            if option != p.OPT_GO:
                await stream.send_all(struct.pack(">QIII", p.OPT_REPLY_MAGIC, option,
                                                  p.REP_ERR_UNSUP, 0))
                continue
            out = self._rep(p.REP_INFO, struct.pack(">HQH", p.INFO_EXPORT, self.size,
                                                    self.flags))
            if self.block_info:
                out += self._rep(p.REP_INFO, struct.pack(">HIII", p.INFO_BLOCK_SIZE,
                                                         *self.block_info))
            await stream.send_all(out + self._rep(p.REP_ACK, b""))
            break
        while True:
            head = await need(28)
            if head is None:
                return
            reqs = [self._parse(head, buf)]
            if reqs[0].cmd == p.CMD_WRITE:
                reqs[0].payload = await need(reqs[0].length) or b""
            while len(buf) >= 28:  # the rest of the pipelined batch already received
                more = self._parse(await need(28) or b"", buf)
                if more.cmd == p.CMD_WRITE:
                    more.payload = await need(more.length) or b""
                reqs.append(more)
            if any(r.cmd == p.CMD_DISC for r in reqs):
                self.seen += reqs
                return
            self.batches.append(len(reqs))
            self.seen += reqs
            if self.stall:
                await trio.sleep_forever()
            out = b"".join(self._answer(r) for r in (reversed(reqs) if self.reverse else reqs))
            if self.cut_after is not None:
                await stream.send_all(out[:self.cut_after])
                await stream.aclose()
                return
            await stream.send_all(out)

    @staticmethod
    def _rep(rtype: int, payload: bytes) -> bytes:
        return struct.pack(">QIII", p.OPT_REPLY_MAGIC, p.OPT_GO, rtype, len(payload)) + payload

    @staticmethod
    def _parse(head: bytes, buf: bytearray) -> Request:
        magic, flags, cmd, handle, offset, length = p.REQUEST.unpack(head)
        assert magic == p.REQUEST_MAGIC
        return Request(cmd, handle, offset, length, flags)

    def _answer(self, r: Request) -> bytes:
        error = self.fail(r)
        head = struct.pack(">IIQ", p.SIMPLE_REPLY_MAGIC, error, r.handle)
        if error:
            return head
        if r.cmd == p.CMD_READ:
            return head + bytes(self.data[r.offset:r.offset + r.length])
        if r.cmd == p.CMD_WRITE:
            self.data[r.offset:r.offset + r.length] = r.payload
        elif r.cmd == p.CMD_WRITE_ZEROES:
            self.data[r.offset:r.offset + r.length] = bytes(r.length)
        return head


@pytest.fixture
async def pair() -> AsyncIterator[Callable[..., trio.abc.AsyncResource]]:
    """Connect an NBDBackend to a FakeServer (configured by the test) in a nursery."""
    async with trio.open_nursery() as nursery:

        async def connect(server: FakeServer, nblocks: int = N) -> NBDBackend:
            client, srv = trio.testing.memory_stream_pair()
            nursery.start_soon(server.serve, srv)
            return await NBDBackend.negotiate(client, NBDAddress(export="x", host="fake"),
                                              nblocks, BS)

        yield connect  # type: ignore[misc]
        nursery.cancel_scope.cancel()


def blk(fill: int) -> bytes:
    return bytes([fill]) * BS


async def test_pipelined_batch_answered_in_reverse(pair) -> None:
    server = FakeServer(reverse=True)
    dev = await pair(server)
    await dev.write_many([(1, blk(1)), (2, blk(2)), (9, blk(9)), (5, blk(5))])
    assert server.batches == [3]  # 1-2 coalesced, 5 and 9 alone, all sent at once
    assert await dev.read_many([9, 5, 2, 1, 0]) == [blk(9), blk(5), blk(2), blk(1), bytes(BS)]
    assert server.batches[-1] == 3  # 0-2 in one request, 5 and 9 alone
    assert dev.counters()["reads"] == 5


async def test_last_write_of_a_block_wins(pair) -> None:
    server = FakeServer(reverse=True)
    dev = await pair(server)
    await dev.write_many([(3, blk(1)), (4, blk(4)), (3, blk(2))])
    assert await dev.read(3) == blk(2)
    writes = [r for r in server.seen if r.cmd == p.CMD_WRITE]
    assert [(r.offset, r.length) for r in writes] == [(3 * BS, 2 * BS)]
    assert dev.counters()["writes"] == 3


async def test_requests_split_at_the_servers_payload_limit(pair) -> None:
    server = FakeServer(block_info=(1, BS, 2 * BS))
    dev = await pair(server)
    await dev.write_many([(i, blk(i)) for i in range(5)])
    assert [r.length for r in server.seen if r.cmd == p.CMD_WRITE] == [2 * BS, 2 * BS, BS]
    assert await dev.read_many(list(range(5))) == [blk(i) for i in range(5)]


async def test_command_error_keeps_the_connection_usable(pair) -> None:
    server = FakeServer(fail=lambda r: 5 if r.cmd == p.CMD_READ and r.offset == 7 * BS else 0)
    dev = await pair(server)
    await dev.write(2, blk(2))
    with pytest.raises(NBDCommandError, match="EIO") as info:
        await dev.read_many([2, 7])
    assert isinstance(info.value, BackendIOError)
    assert await dev.read(2) == blk(2)  # answered in step: the next batch works


@pytest.mark.parametrize("cut", [0, 10, 16, 16 + BS // 2])
async def test_connection_cut_mid_reply_breaks_the_device(pair, cut: int) -> None:
    server = FakeServer(cut_after=cut)
    dev = await pair(server)
    with pytest.raises(BackendIOError):
        await dev.read(0)  # a short read: never zero-filled, never half a block
    sent = len(server.seen)
    with pytest.raises(BackendIOError, match="unusable"):
        await dev.read(1)
    assert len(server.seen) == sent  # nothing more went out on a broken connection


async def test_cancelled_batch_leaves_no_half_answered_connection(pair, capkern_clock) -> None:
    server = FakeServer(stall=True)
    dev = await pair(server)
    with trio.move_on_after(1) as scope:
        await dev.read(0)
    assert scope.cancelled_caught
    with pytest.raises(BackendIOError, match="unusable"):
        await dev.read(0)
    await dev.aclose()


async def test_no_flush_no_write_zeroes(pair) -> None:
    server = FakeServer(flags=p.TFLAG_HAS_FLAGS)
    dev = await pair(server)
    await dev.write_many([(i, blk(7)) for i in range(4)])
    await dev.flush()
    await dev.trim(1, 2)
    assert [await dev.read(i) for i in range(4)] == [blk(7), bytes(BS), bytes(BS), blk(7)]
    cmds = {r.cmd for r in server.seen}
    assert p.CMD_FLUSH not in cmds and p.CMD_WRITE_ZEROES not in cmds
    assert dev.counters()["flushes"] == 1 and dev.counters()["trims"] == 1


async def test_trim_uses_write_zeroes_and_flush_is_sent(pair) -> None:
    server = FakeServer()
    dev = await pair(server)
    await dev.write_many([(i, blk(7)) for i in range(4)])
    await dev.trim(1, 2)
    await dev.flush()
    assert [(r.cmd, r.offset, r.length) for r in server.seen[-2:]] == [
        (p.CMD_WRITE_ZEROES, BS, 2 * BS), (p.CMD_FLUSH, 0, 0)]
    assert await dev.read_many([1, 2]) == [bytes(BS)] * 2


async def test_close_disconnects_politely(pair) -> None:
    server = FakeServer()
    dev = await pair(server)
    await dev.aclose()
    await dev.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.seen[-1].cmd == p.CMD_DISC
    with pytest.raises(DeviceClosed):
        await dev.read(0)


@pytest.mark.parametrize(
    ("server", "match"),
    [(FakeServer(size=N * BS - 1), "bytes"),
     (FakeServer(flags=FLAGS | p.TFLAG_READ_ONLY), "read-only"),
     (FakeServer(block_info=(1024, 1024, 4096)), "aligned")],
    ids=["too-small", "read-only", "coarser-blocks"])
async def test_unusable_exports_are_refused(pair, server: FakeServer, match: str) -> None:
    with pytest.raises(BlockDevError, match=match):
        await pair(server)
