"""The block device's domain program (UNTRUSTED): serves the BLOCKDEV contract.

Backends: ``memory`` (default), ``file:PATH`` (real ``pread``/``pwrite``, flush =
``fsync``) and ``nbd://HOST[:PORT][/EXPORT]`` or ``nbd+unix:///EXPORT?socket=PATH`` (a
real NBD server, over Trio sockets).  ``latency`` adds a simulated delay per request, so
that experiments run under an autojump clock measure time.
"""

from __future__ import annotations

from typing import Any

import trio

from ...errors import IPCError
from ...nbdaddr import is_nbd_spec
from ...proc import Process
from ._async import AsyncBlockBackend, as_async
from ._backends import BackendIOError, BlockBackend, Misaligned, OutOfRange, open_backend
from ._nbd import open_nbd

__all__ = ["blockdev_server", "serve_backend"]

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (OutOfRange, "range"), (Misaligned, "misaligned"), (BackendIOError, "io"),
)


async def blockdev_server(proc: Process, spec: str, nblocks: int, latency: float = 0.0) -> None:
    """Open the backend named by ``spec`` and serve it on the ``service`` endpoint."""
    backend: AsyncBlockBackend = (open_nbd(spec, nblocks) if is_nbd_spec(spec)
                                  else as_async(open_backend(spec, nblocks)))
    async with backend:
        await serve_backend(proc, backend, latency)


async def _handle(backend: AsyncBlockBackend, label: str, body: Any) -> Any:
    if label == "info":
        return {"block_size": backend.block_size, "nblocks": backend.nblocks}
    if label == "read":
        return {"blocks": await backend.read_many(body["lbas"])}
    if label == "write":
        await backend.write_many([(lba, data) for lba, data in body["blocks"]])
    elif label == "flush":
        await backend.flush()
    elif label == "trim":
        await backend.trim(body["lba"], body["count"])
    elif label == "stats":
        return backend.counters()
    return None


async def serve_backend(proc: Process, backend: BlockBackend | AsyncBlockBackend,
                        latency: float = 0.0) -> None:
    """Serve any backend, synchronous or not (a malicious disk is just another backend)."""
    backend = as_async(backend)
    while True:
        msg = await proc.recv("service")
        if latency:
            await trio.sleep(latency)
        try:
            reply = await _handle(backend, msg.label, msg.body)
        except Exception as exc:
            reason = next((r for t, r in _REASONS if isinstance(exc, t)), "io")
            proc.reply_error(reason, str(exc)[:200])
            continue
        try:
            proc.reply("ok", reply)
        except IPCError:
            # a valid request whose answer cannot cross (e.g. 256 blocks of 4 KiB exceed
            # the kernel's body limit): the kernel has already failed the caller with a
            # typed error, and the device keeps serving
            continue
