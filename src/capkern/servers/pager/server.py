"""The honest external pager's domain program (UNTRUSTED): serves the PAGER contract.

It owns the replacement policy, which sees only opaque page handles and the
reference/dirty bits the kernel harvests -- never contents.  It stores sealed pages
through its capability to the block device: one whole block per page's ciphertext,
nonce and tag packed into metadata blocks.  Every request is answered by supplying the
page or failing it with a typed reason (``not_found``, ``io``, ``no_space``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ServerError
from ...pagefmt import META_LEN, join_blob, split_blob
from ...proc import Process
from ._layout import NoSpace, SwapLayout, pack_meta_entry, unpack_meta_entry
from ._policy import POLICIES, ReplacementPolicy, make_policy

__all__ = ["POLICIES", "Pager", "make_pager", "pager_server"]

Program = Callable[..., Any]


class Pager:
    """Pager state and request handlers; ``serve`` runs the loop.  Subclass or wrap
    it to build experimental (or malicious) pagers."""

    def __init__(self, proc: Process, policy: ReplacementPolicy) -> None:
        self.proc = proc
        self.policy = policy
        self.layout: SwapLayout | None = None
        self.block_size = 0
        self.meta: dict[int, bytearray] = {}
        self.stats = {"evict": 0, "store": 0, "fetch": 0, "discard": 0, "not_found": 0}

    async def start(self) -> None:
        info = (await self.proc.call("blockdev", "info", {})).ok()
        self.block_size = info["block_size"]
        self.layout = SwapLayout(info["nblocks"], self.block_size)

    async def serve(self) -> None:
        await self.start()
        while True:
            msg = await self.proc.recv("service")
            await self.dispatch(msg.label, msg.body)

    async def dispatch(self, label: str, body: Any) -> None:
        """Handle one request and reply to it."""
        try:
            reply = await getattr(self, "on_" + label)(body)
        except ServerError as exc:
            self.proc.reply_error(exc.reason, exc.detail)
            return
        self.proc.reply("ok", reply)

    # -- handlers --------------------------------------------------------------------------

    async def on_evict(self, body: Any) -> Any:
        self.stats["evict"] += 1
        for handle in body["mapped"]:
            self.policy.admit(handle)
        self.policy.referenced(body["referenced"])
        self.policy.dirtied(body["dirty"])
        victims = self.policy.choose(body["n"])
        for handle in victims:  # the kernel re-reports any page it keeps after all
            self.policy.remove(handle)
        return {"victims": victims}

    async def on_store(self, body: Any) -> Any:
        assert self.layout is not None
        self.stats["store"] += 1
        writes: list[list[Any]] = []
        stored = []
        touched: set[int] = set()
        for handle, blob in body["pages"]:
            try:
                slot = self.layout.allocate(handle)
            except NoSpace:
                continue
            nonce, ciphertext, tag = split_blob(blob)
            writes.append([self.layout.data_lba(slot), ciphertext])
            lba, off = self.layout.meta_lba(slot), self.layout.meta_offset(slot)
            block = self.meta.setdefault(lba, bytearray(self.block_size))
            block[off : off + META_LEN] = pack_meta_entry(nonce, tag)
            touched.add(lba)
            stored.append(handle)
        if not stored:
            raise ServerError("no_space", "swap is full")
        writes.extend([lba, bytes(self.meta[lba])] for lba in sorted(touched))
        await self._blockdev("write", {"blocks": writes})
        return {"stored": stored}

    async def on_fetch(self, body: Any) -> Any:
        assert self.layout is not None
        self.stats["fetch"] += 1
        slot = self.layout.lookup(body["handle"])
        if slot is None:
            self.stats["not_found"] += 1
            raise ServerError("not_found", "no such page in swap")
        reply = await self._blockdev("read", {"lbas": [self.layout.data_lba(slot)]})
        block = self.meta.get(self.layout.meta_lba(slot))
        if block is None:
            raise ServerError("io", "metadata lost")
        nonce, tag = unpack_meta_entry(bytes(block), self.layout.meta_offset(slot))
        return {"blob": join_blob(nonce, reply["blocks"][0], tag)}

    async def on_discard(self, body: Any) -> Any:
        assert self.layout is not None
        self.stats["discard"] += 1
        for handle in body["handles"]:
            self.policy.remove(handle)
            self.layout.release(handle)
        return None

    async def on_stats(self, body: Any) -> Any:
        used = self.layout.used if self.layout else 0
        return {**self.stats, "policy": self.policy.name, "resident": len(self.policy),
                "swap_used": used}

    async def _blockdev(self, label: str, body: Any) -> Any:
        try:
            return (await self.proc.call("blockdev", label, body)).ok()
        except ServerError as exc:
            raise ServerError("io", f"block device: {exc}") from None


def make_pager(policy: ReplacementPolicy | Callable[[], ReplacementPolicy] | None = None,
               cls: type[Pager] = Pager) -> Program:
    """A pager program using ``policy`` (an instance or factory) instead of a named one."""

    async def pager_program(proc: Process, policy_name: str = "clock") -> None:
        chosen = policy() if callable(policy) else policy
        await cls(proc, chosen if chosen is not None else make_policy(policy_name)).serve()

    return pager_program


async def pager_server(proc: Process, policy_name: str = "clock") -> None:
    """The default honest pager, with a policy chosen by name (fifo, clock, lru...)."""
    await Pager(proc, make_policy(policy_name)).serve()
