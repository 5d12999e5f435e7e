"""Immediate handlers (``serverloop.immediate``): a handler that answers at once is an
async handler like any other -- awaited, wrapped by ``around``, called by tests -- but
the server loop calls its plain function directly, with no coroutine per request.  The
answers, the typed errors and the containment of refused replies are the same; the
sealer's seal/unseal and a synchronous disk's read/write are served this way."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytest

from capkern import _serverloop as serverloop
from capkern._pagefmt import PAGE_SIZE
from capkern.errors import ContractViolation, ServerError
from capkern.servers.blockdev import backend_handlers
from capkern.servers.blockdev._backends import MemoryBackend
from capkern.servers.crypt._server import CryptServer

BOOT = bytes(range(16))


@dataclass
class Req:
    label: str
    body: Any


class Stop(Exception):
    pass


class Port:
    def __init__(self, *requests: Req, refuse_ok: Any = None) -> None:
        self.requests = list(requests)
        self.answers: list[tuple[str, Any]] = []
        self.refuse_ok = refuse_ok

    async def recv(self, slot: int | str) -> Req:
        if not self.requests:
            raise Stop
        return self.requests.pop(0)

    def reply(self, label: str = "ok", body: Any = None) -> bool:
        if label == "ok" and body == self.refuse_ok:
            raise ContractViolation("out of contract")
        self.answers.append((label, body))
        return True

    def reply_error(self, reason: str, detail: str = "") -> bool:
        return self.reply("error", {"reason": reason, "detail": detail})


class Broke(Exception):
    pass


callers: list[str] = []


def double(body: Any) -> Any:
    callers.append(sys._getframe(1).f_code.co_name)  # who called: the loop or a wrapper
    if body["n"] < 0:
        raise Broke("negative")
    if body["n"] == 0:
        raise ServerError("not_found", "zero")
    return {"n": body["n"] * 2}


async def test_the_loop_calls_an_immediate_handler_directly() -> None:
    callers.clear()
    refused: list[Exception] = []
    port = Port(Req("double", {"n": 2}), Req("double", {"n": -1}), Req("double", {"n": 0}),
                Req("double", {"n": 5}), Req("other", None), refuse_ok={"n": 10})
    with pytest.raises(Stop):
        await serverloop.serve(port, {"double": serverloop.immediate(double)},
                               errors=((Broke, "io"),), on_refused=refused.append)
    assert callers == ["serve"] * 4  # never through its coroutine wrapper
    assert port.answers == [
        ("ok", {"n": 4}),
        ("error", {"reason": "io", "detail": "negative"}),
        ("error", {"reason": "not_found", "detail": "zero"}),
        ("error", {"reason": "unsupported", "detail": "no handler for label 'other'"}),
    ]
    assert [type(e) for e in refused] == [ContractViolation]  # {"n": 10}, contained


async def test_an_immediate_handler_still_awaits_and_wraps_as_an_async_one() -> None:
    callers.clear()
    handler = serverloop.immediate(double)
    assert handler.__name__ == "double"
    assert await handler({"n": 3}) == {"n": 6}
    seen: list[str] = []

    async def spy(label: str, inner: serverloop.Handler, body: Any) -> Any:
        seen.append(label)
        return await inner(body)

    port = Port(Req("double", {"n": 4}))
    with pytest.raises(Stop):
        await serverloop.serve(port, serverloop.around({"double": handler}, spy))
    assert seen == ["double"]  # a wrapped handler is served through its wrapper
    assert port.answers == [("ok", {"n": 8})]
    assert callers == ["handler", "handler"]


async def test_the_sealer_serves_seal_and_unseal_immediately_with_the_same_answers() -> None:
    server = CryptServer("aes-256-gcm", BOOT)
    table = server.handlers()
    assert hasattr(table["seal"], "immediate") and hasattr(table["unseal"], "immediate")
    page = bytes(range(256)) * (PAGE_SIZE // 256)
    blobs = (await table["seal"]({"pages": [[[1, 0, 7, 1], page]]}))["blobs"]
    reply = await server.on_unseal({"pages": [[[1, 0, 7, 1], blobs[0]],
                                              [[1, 0, 8, 1], blobs[0]]]})  # misplaced
    assert reply == {"plain": [page, b""], "ok": [1, 0]}
    assert await table["unseal"]({"pages": [[[1, 0, 7, 1], blobs[0]]]}) == \
        {"plain": [page], "ok": [1]}
    with pytest.raises(ValueError):  # a field out of range is associated_data's error
        table["unseal"].immediate({"pages": [[[1 << 40, 0, 7, 1], blobs[0]]]})


async def test_a_memory_disk_reads_and_writes_immediately() -> None:
    table = backend_handlers(MemoryBackend(8, 512))
    assert hasattr(table["read"], "immediate") and hasattr(table["write"], "immediate")
    assert not hasattr(table["flush"], "immediate")
    await table["write"]({"blocks": [[3, b"x" * 512]]})
    assert (await table["read"]({"lbas": [3, 0]}))["blocks"] == [b"x" * 512, bytes(512)]
