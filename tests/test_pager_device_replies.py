"""The pager's fetch against a lying block device, driven directly (sans kernel, so even
replies the BLOCKDEV contract would stop are tried): anything but exactly one block of a
page's size is the typed ``io`` error, as is a failed call; an honest reply gives back
exactly the stored blob, for ``fetch`` and ``fetch_many`` alike."""

from __future__ import annotations

from typing import Any

import pytest

from capkern._pagefmt import PAGE_SIZE, SEALED_LEN
from capkern.errors import CapabilityRevoked, ServerError
from capkern.servers.blockdev import MemoryBackend, backend_handlers
from capkern.servers.pager import FIFOPolicy, Pager


class _Reply:
    def __init__(self, body: Any) -> None:
        self.body = body

    def ok(self) -> Any:
        return self.body


class _DeviceProc:
    """The pager's view of its process: ``call("blockdev", ...)`` reaches a real memory
    disk, unless ``lie`` replaces the next read's reply body (or ``fail`` raises)."""

    def __init__(self) -> None:
        self.table = backend_handlers(MemoryBackend(64))
        self.lie: Any = None
        self.fail = False

    async def call(self, slot: str, label: str, body: Any) -> _Reply:
        assert slot == "blockdev"
        if self.fail:
            raise CapabilityRevoked("the block device capability was revoked")
        reply = await self.table[label](body)
        if label == "read" and self.lie is not None:
            reply = self.lie
        return _Reply(reply)


def _blob(i: int) -> bytes:
    return bytes([i]) * SEALED_LEN


def _run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the handler waited")


@pytest.fixture
def pager() -> Pager:
    p = Pager(_DeviceProc(), FIFOPolicy())  # type: ignore[arg-type]
    _run(p.start())
    assert _run(p.on_store({"pages": [[5, _blob(5)], [6, _blob(6)]]})) == {"stored": [5, 6]}
    return p


PAGE = bytes(PAGE_SIZE)
LIES: list[Any] = [None, 7, "blocks", [PAGE], {}, {"blocks": None}, {"blocks": []},
        {"blocks": [PAGE, PAGE]}, {"blocks": [PAGE[:-1]]}, {"blocks": [PAGE + b"x"]},
        {"blocks": [bytearray(PAGE)]}, {"blocks": [str(PAGE)]}, {"blocks": PAGE[:1]},
        {"blocks": {PAGE: 1}}, {"blocks": [[PAGE]]}]


@pytest.mark.parametrize("lie", LIES, ids=range(len(LIES)))
def test_a_wrong_read_reply_is_an_io_error_and_the_page_stays(pager: Pager, lie: Any) -> None:
    proc: Any = pager.proc
    proc.lie = {"lie": lie} if lie is None else lie
    with pytest.raises(ServerError) as info:
        _run(pager.on_fetch({"handle": 5}))
    assert info.value.reason == "io"
    proc.lie = None
    assert _run(pager.on_fetch({"handle": 5})) == {"blob": _blob(5)}


def test_a_failed_device_call_is_an_io_error(pager: Pager) -> None:
    proc: Any = pager.proc
    proc.fail = True
    for body in ({"handle": 6}, {"handles": [6]}):
        with pytest.raises(ServerError) as info:
            _run((pager.on_fetch if "handle" in body else pager.on_fetch_many)(body))
        assert info.value.reason == "io" and "revoked" in info.value.detail


def test_honest_replies_give_back_the_stored_blobs(pager: Pager) -> None:
    assert _run(pager.on_fetch({"handle": 6})) == {"blob": _blob(6)}
    got = _run(pager.on_fetch_many({"handles": [6, 9, 5]}))
    assert got == {"blobs": [_blob(6), b"", _blob(5)]}
    with pytest.raises(ServerError) as info:
        _run(pager.on_fetch({"handle": 9}))
    assert info.value.reason == "not_found"
