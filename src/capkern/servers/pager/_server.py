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

from ... import _serverloop as serverloop
from ..._pagefmt import META_LEN, NONCE_LEN, PAGE_SIZE, SEALED_LEN, TAG_LEN, split_blob
from ..._proc import Process
from ...errors import CapkernError, ServerError
from ._layout import Plan, SwapLayout, join_sealed
from ._policy import POLICIES, ReplacementPolicy, make_policy

__all__ = ["POLICIES", "Pager", "make_pager", "pager_server"]

Program = Callable[..., Any]

_HANDLE_END = 1 << 63  # handles are 0 <= h < 2**63 (the PAGER contract's HANDLE)


class Pager:
    """Pager state and request handlers; ``serve`` runs them in the one server loop
    (:mod:`capkern._serverloop`).  Subclass it, or wrap its :meth:`handlers`, to build
    experimental (or malicious) pagers."""

    def __init__(self, proc: Process, policy: ReplacementPolicy) -> None:
        self.proc = proc
        self.policy = policy
        self.layout: SwapLayout | None = None
        self.unusable = ""  # why the device cannot hold pages (set by start)
        self.block_size = 0
        self.meta: dict[int, bytearray] = {}
        self.device: int | str = "blockdev"  # its slot, once start() has resolved the name
        self.stats = {"evict": 0, "observe": 0, "store": 0, "fetch": 0, "discard": 0,
                      "not_found": 0}

    async def start(self) -> None:
        """Learn the device's geometry.  A device the pager cannot use (unreachable, too
        small, blocks of another size than a page) does not stop the pager: it keeps
        serving, refuses every store with ``io`` and the reason, and holds no page."""
        resolve = getattr(self.proc, "slot", None)  # (a test's stand-in may have none)
        try:  # resolved once, not at every call (the capability is looked up at each)
            self.device = resolve("blockdev") if callable(resolve) else "blockdev"
        except CapkernError:
            pass  # no such slot: each call fails as the device's io error
        try:
            info = await self._blockdev("info", {})
            if info["block_size"] != PAGE_SIZE:
                raise ValueError(f"block size {info['block_size']} is not the page size "
                                 f"{PAGE_SIZE}")
            self.block_size = info["block_size"]
            self.layout = SwapLayout(info["nblocks"], self.block_size)
        except (ServerError, ValueError) as exc:
            self.unusable = f"swap device unusable: {exc}"

    async def serve(self) -> None:
        """Learn the device, then serve :meth:`handlers` with the one server loop."""
        await self.start()
        await serverloop.serve(self.proc, self.handlers(), on_refused=self.reply_refused)

    def handlers(self) -> serverloop.Table:
        """The handlers by label: every ``on_<label>`` method serves ``<label>`` (so a
        subclass adds a request by adding a method).  Override, e.g. with
        :func:`capkern._serverloop.around`, to add behaviour to every request."""
        return {name[3:]: getattr(self, name) for name in dir(self)
                if name.startswith("on_") and callable(getattr(self, name))}

    def reply_refused(self, exc: CapkernError) -> None:
        """An answer could not cross (e.g. a custom policy's out-of-contract victims):
        the kernel has failed the caller with a typed error; the pager keeps serving."""

    # -- handlers --------------------------------------------------------------------------

    def observe(self, body: Any) -> None:
        """Feed the kernel's report to the policy: newly resident pages, references (in
        precise mode every one, in order), dirty pages, next uses (oracle mode)."""
        policy = self.policy
        policy.admit_many(body["mapped"])
        if "spaces" in body:
            policy.spaces(body["mapped"], body["spaces"])
        policy.referenced(body["referenced"])
        if "next_use" in body:
            policy.next_uses(body["referenced"], body["next_use"])
        policy.dirtied(body["dirty"])

    async def on_observe(self, body: Any) -> Any:
        self.stats["observe"] += 1
        self.observe(body)
        return None

    async def on_evict(self, body: Any) -> Any:
        self.stats["evict"] += 1
        self.observe(body)
        policy = self.policy
        if "for" in body:
            policy.faulting(body["for"])
        n = body["n"]
        # a policy's bad choice must cost speed only, never an out-of-contract reply:
        # distinct plain ints in the handle range (type() is int: no bool), at most n
        victims = [h for h in dict.fromkeys(policy.choose(n))
                   if type(h) is int and 0 <= h < _HANDLE_END][:n]
        policy.remove_many(victims)  # the kernel re-reports any page it keeps after all
        return {"victims": victims}

    async def on_store(self, body: Any) -> Any:
        """Store a batch copy-on-write: every page goes to a free slot and its previous
        copy (if any) stays where it was until the whole batch is on the disk.

        If the device write fails, nothing changes: a page stored before is still
        fetched exactly as it was, a new one is not in swap.  Only a page that had to be
        rewritten in place (no free slot left) loses its previous copy on such a failure;
        it is then dropped, so a fetch says ``not_found`` rather than returning a mix.
        A batch naming a handle twice stores its last copy.  Pages that find no slot are
        left out of ``stored``; if none fits, the store fails with ``no_space``.
        """
        layout = self.layout
        self.stats["store"] += 1
        if layout is None:
            raise ServerError("io", self.unusable or "no swap device")
        pages = _last_copies(body["pages"])
        plan = layout.reserve(pages)  # new pages first (SwapLayout.reserve)
        if not plan:
            raise ServerError("no_space", f"swap is full ({layout.slots} slots)")
        stored = [h for h in pages if h in plan]
        writes, staged = self._stage(layout, stored, pages, plan)
        try:
            await self._blockdev("write", {"blocks": writes})
        except ServerError:
            layout.cancel(plan)
            raise
        self.meta.update(staged)
        layout.commit(plan)
        return {"stored": stored}

    def _stage(self, layout: SwapLayout, stored: list[int], pages: dict[int, bytes],
               plan: Plan) -> tuple[list[list[Any]], dict[int, bytearray]]:
        """The device writes of a store: each page's ciphertext in its new slot's data
        block, then the metadata blocks its nonce and tag change (copies, staged until
        the write succeeds)."""
        writes: list[list[Any]] = []
        staged: dict[int, bytearray] = {}
        per_meta, meta_blocks, slots = layout.per_meta, layout.meta_blocks, layout.slots
        for handle in stored:
            # split_blob and layout.locate, inlined (no call per page); a blob of the
            # wrong size or a slot out of range takes the checked calls, which raise
            blob, slot = pages[handle], plan[handle][0]
            if len(blob) != SEALED_LEN or not 0 <= slot < slots:
                split_blob(blob)
                layout.locate(slot)
            lba, index = divmod(slot, per_meta)
            writes.append([meta_blocks + slot, blob[NONCE_LEN:-TAG_LEN]])
            block = staged.get(lba)
            if block is None:
                block = staged[lba] = self._meta_block(lba)
            off = index * META_LEN  # pack_meta_entry's layout: nonce || tag
            block[off : off + META_LEN] = blob[:NONCE_LEN] + blob[-TAG_LEN:]
        writes.extend([lba, bytes(staged[lba])] for lba in sorted(staged))
        return writes, staged

    def _meta_block(self, lba: int) -> bytearray:
        """A copy of metadata block ``lba`` as the pager last wrote it (zeros if never)."""
        block = self.meta.get(lba)
        return bytearray(block) if block is not None else bytearray(self.block_size)

    async def on_fetch(self, body: Any) -> Any:
        self.stats["fetch"] += 1
        layout = self.layout
        where = layout.find(body["handle"]) if layout is not None else None
        if where is None:
            self.stats["not_found"] += 1
            raise ServerError("not_found", "no such page in swap")
        data_lba, meta_lba, meta_offset = where
        try:  # self._blockdev, inlined: one coroutine frame less on the fault path
            reply = (await self.proc.call(self.device, "read", {"lbas": [data_lba]})).ok()
        except CapkernError as exc:
            raise _device_failed(exc) from None
        # a lying device: anything but a list of exactly one block of a page's size
        blocks = reply.get("blocks") if type(reply) is dict else None
        if type(blocks) is not list or len(blocks) != 1 or type(data := blocks[0]) is not bytes \
                or len(data) != PAGE_SIZE:
            raise ServerError("io", "block device answered the read with the wrong blocks")
        block = self.meta.get(meta_lba)
        if block is None:
            raise ServerError("io", "metadata lost")
        return {"blob": join_sealed(block, meta_offset, data)}

    async def on_fetch_many(self, body: Any) -> Any:
        """Read-ahead: several pages in one block-device read; b"" for a page not held."""
        handles = body["handles"]
        self.stats["fetch"] += len(handles)
        layout = self.layout
        blobs = [b""] * len(handles)
        if layout is None:
            return {"blobs": blobs}
        held = [(i, where) for i, h in enumerate(handles)
                if (where := layout.find(h)) is not None]
        if not held:
            return {"blobs": blobs}
        reply = await self._blockdev("read", {"lbas": [where[0] for _, where in held]})
        blocks = reply.get("blocks") if isinstance(reply, dict) else None
        if not isinstance(blocks, list) or len(blocks) != len(held) or not all(
                type(b) is bytes and len(b) == PAGE_SIZE for b in blocks):
            raise ServerError("io", "block device answered the read with the wrong blocks")
        meta = self.meta
        for (i, (_data_lba, meta_lba, meta_offset)), block in zip(held, blocks, strict=True):
            entries = meta.get(meta_lba)
            if entries is not None:
                blobs[i] = join_sealed(entries, meta_offset, block)
        return {"blobs": blobs}

    async def on_discard(self, body: Any) -> Any:
        self.stats["discard"] += 1
        for handle in body["handles"]:
            self.policy.remove(handle)
            if self.layout is not None:
                self.layout.release(handle)
        return None

    async def on_stats(self, body: Any) -> Any:
        used = self.layout.used if self.layout else 0
        return {**self.stats, "policy": self.policy.name, "resident": len(self.policy),
                "swap_used": used}

    async def _blockdev(self, label: str, body: Any) -> Any:
        """Call the block device; any failure of it (an error reply, a crash, a reply
        out of contract, a revoked capability) is this pager's ``io`` error."""
        try:
            return (await self.proc.call(self.device, label, body)).ok()
        except CapkernError as exc:
            raise _device_failed(exc) from None


def _device_failed(exc: CapkernError) -> ServerError:
    """The pager's ``io`` error for a failed call to its block device."""
    return ServerError("io", f"block device: {exc}")


def _last_copies(items: list[Any]) -> dict[int, bytes]:
    """``handle -> blob`` of a store batch; a handle named twice keeps its last copy,
    in the position of that last copy."""
    pages: dict[int, bytes] = dict(items) if type(items) is list else {}
    if len(pages) != len(items):  # a handle named twice (or no list): item by item
        pages = {}
        for handle, blob in items:
            pages.pop(handle, None)
            pages[handle] = blob
    return pages


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
