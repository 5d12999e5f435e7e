"""Fake server ports for fault-path tests: no pager, crypt or blockdev domain at all.

A :class:`FakePort` implements :class:`capkern.mmu.ServerPort` by calling plain
async handlers in the caller's task.  It keeps the boundary's rules, so a test of the
fault path against it means what a test against IPC would: the body crosses as msgpack
(fresh copies both ways), the *request* is checked against the contract (the in-process
``IpcPort`` trusts the kernel's own requests; this is where the kernel's requests are
shown to be in contract), the reply is checked against the contract, an error reply is a
typed :class:`ServerError` with a declared reason, and silence past the deadline is
:class:`PagerUnavailable`.  Handlers raise ``ServerError`` to answer with an error.

:func:`memory_pager` and :func:`sealer_handlers` give an honest in-memory pager (FIFO
victims) and the real sealer, to compose with tampering wrappers in tests.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import _wire as wire
from .._contract import Contract
from .._protocols import CRYPT, PAGER
from ..errors import PagerUnavailable, ServerError
from ..servers.crypt import Binding, Sealer, SealError

__all__ = ["FakePort", "Handler", "fake_crypt", "fake_pager", "memory_pager", "sealer_handlers"]

Handler = Callable[[Any], Awaitable[Any]]


class FakePort:
    """A server port that calls ``handlers[label](body)`` under ``contract``'s rules."""

    def __init__(self, name: str, contract: Contract, handlers: dict[str, Handler]) -> None:
        self.name = name
        self.contract = contract
        self.handlers = handlers
        self.calls: list[tuple[str, Any]] = []  # every request, as the server saw it
        self.limits = wire.Limits()

    async def call(self, label: str, body: Any, deadline: float) -> Any:
        request = wire.decode(wire.encode(body, self.limits))
        self.contract.check_request(label, request)  # the kernel builds only these
        self.calls.append((label, request))
        with trio.move_on_after(deadline):
            try:
                reply_label, reply = "ok", await self.handlers[label](request)
            except ServerError as exc:
                reply_label, reply = "error", {"reason": exc.reason, "detail": exc.detail}
            reply = wire.decode_untrusted(wire.encode(reply, self.limits), self.limits)
            self.contract.check_reply(label, reply_label, reply)
            if reply_label == "error":
                raise ServerError(reply["reason"], reply["detail"])
            return reply
        raise PagerUnavailable(f"{self.name} did not answer {label!r} within {deadline}s")


def memory_pager() -> dict[str, Handler]:
    """An honest pager's handlers: sealed pages in a dict, FIFO victims."""
    store: dict[int, bytes] = {}
    resident: dict[int, None] = {}

    async def observe(body: Any) -> Any:  # precise mode's early report
        for h in body["mapped"]:
            resident.setdefault(h, None)
        return None

    async def evict(body: Any) -> Any:
        await observe(body)
        victims = list(resident)[: body["n"]]
        for h in victims:
            del resident[h]
        return {"victims": victims}

    async def store_(body: Any) -> Any:
        for h, blob in body["pages"]:
            store[h] = blob
        return {"stored": [h for h, _ in body["pages"]]}

    async def fetch(body: Any) -> Any:
        if body["handle"] not in store:
            raise ServerError("not_found", "no such page")
        return {"blob": store[body["handle"]]}

    async def fetch_many(body: Any) -> Any:
        return {"blobs": [store.get(h, b"") for h in body["handles"]]}

    async def discard(body: Any) -> Any:
        for h in body["handles"]:
            store.pop(h, None)
            resident.pop(h, None)
        return None

    async def stats(body: Any) -> Any:
        return {"stored": len(store)}

    return {"evict": evict, "observe": observe, "store": store_, "fetch": fetch,
            "fetch_many": fetch_many, "discard": discard, "stats": stats}


def sealer_handlers(cipher: str = "aes-256-gcm", boot_id: bytes | None = None
                    ) -> dict[str, Handler]:
    """The real sealer, served in the caller's task."""
    sealer = Sealer(cipher)
    boot = boot_id if boot_id is not None else os.urandom(16)

    async def seal(body: Any) -> Any:
        return {"blobs": sealer.seal_many([(Binding(boot, *b), p) for b, p in body["pages"]])}

    async def unseal(body: Any) -> Any:
        results = sealer.unseal_many([(Binding(boot, *b), blob) for b, blob in body["pages"]])
        return {"plain": [b"" if isinstance(r, SealError) else r for r in results],
                "ok": [0 if isinstance(r, SealError) else 1 for r in results]}

    async def stats(body: Any) -> Any:
        return {"cipher": sealer.cipher, "seals": sealer.seals, "unseals": 0, "refused": 0}

    return {"seal": seal, "unseal": unseal, "stats": stats}


def fake_pager(handlers: dict[str, Handler] | None = None) -> FakePort:
    return FakePort("fake-pager", PAGER, handlers if handlers is not None else memory_pager())


def fake_crypt(handlers: dict[str, Handler] | None = None) -> FakePort:
    return FakePort("fake-crypt", CRYPT, handlers if handlers is not None else sealer_handlers())
