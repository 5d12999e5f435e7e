"""The block device's domain program (UNTRUSTED): serves the BLOCKDEV contract.

Backends: ``memory`` (default), ``file:PATH`` (real ``pread``/``pwrite``, flush =
``fsync``) and ``nbd://HOST[:PORT][/EXPORT]`` or ``nbd+unix:///EXPORT?socket=PATH`` (a
real NBD server, over Trio sockets).  ``latency`` adds a simulated delay per request, so
that experiments run under an autojump clock measure time.
"""

from __future__ import annotations

from typing import Any

import trio

from ... import _serverloop as serverloop
from ..._nbdaddr import is_nbd_spec
from ..._proc import Process
from ._async import AsyncBlockBackend, SyncBackend, as_async
from ._backends import BackendIOError, BlockBackend, Misaligned, OutOfRange, open_backend
from ._nbd import open_nbd

__all__ = ["ERRORS", "backend_handlers", "blockdev_server", "serve_backend"]

ERRORS: serverloop.ErrorMap = (
    (OutOfRange, "range"), (Misaligned, "misaligned"), (BackendIOError, "io"),
    (Exception, "io"),  # whatever else a disk does wrong is an I/O error to its client
)
"""How the block device answers a backend's exceptions: the BLOCKDEV contract's reasons."""


async def blockdev_server(proc: Process, spec: str, nblocks: int, latency: float = 0.0) -> None:
    """Open the backend named by ``spec`` and serve it on the ``service`` endpoint."""
    backend: AsyncBlockBackend = (open_nbd(spec, nblocks) if is_nbd_spec(spec)
                                  else as_async(open_backend(spec, nblocks)))
    async with backend:
        await serve_backend(proc, backend, latency)


def backend_handlers(backend: BlockBackend | AsyncBlockBackend) -> serverloop.Table:
    """The BLOCKDEV contract's handlers by label, for any backend, synchronous or not."""
    device = as_async(backend)

    async def info(body: Any) -> Any:
        return {"block_size": device.block_size, "nblocks": device.nblocks}

    async def read(body: Any) -> Any:
        return {"blocks": await device.read_many(body["lbas"])}

    async def write(body: Any) -> Any:
        await device.write_many(body["blocks"])  # checks every (lba, data) pair first

    async def flush(body: Any) -> Any:
        await device.flush()

    async def trim(body: Any) -> Any:
        await device.trim(body["lba"], body["count"])

    async def stats(body: Any) -> Any:
        return device.counters()

    table: dict[str, serverloop.Handler] = {
        "info": info, "read": read, "write": write, "flush": flush, "trim": trim,
        "stats": stats}
    if type(device) is SyncBackend:  # a synchronous backend, given bare or wrapped
        table.update(_direct_handlers(device.backend))
    return table


def _direct_handlers(backend: BlockBackend) -> serverloop.Table:
    """``read`` and ``write`` calling a synchronous backend directly: the same calls as
    through :class:`SyncBackend`, with no coroutine per request (immediate handlers:
    these two run at every page-in and page-out)."""

    def read(body: Any) -> Any:
        return {"blocks": backend.read_many(body["lbas"])}

    def write(body: Any) -> Any:
        backend.write_many(body["blocks"])  # checks every (lba, data) pair first

    return {"read": serverloop.immediate(read), "write": serverloop.immediate(write)}


async def serve_backend(proc: Process, backend: BlockBackend | AsyncBlockBackend,
                        latency: float = 0.0) -> None:
    """Serve any backend, synchronous or not (a malicious disk is just another backend).

    A valid request whose answer cannot cross (e.g. 256 blocks of 4 KiB exceed the
    kernel's body limit) fails its caller with a typed error; the device keeps serving.
    """
    table = backend_handlers(backend)
    if latency:

        async def delayed(label: str, handler: serverloop.Handler, body: Any) -> Any:
            await trio.sleep(latency)
            return await handler(body)

        table = serverloop.around(table, delayed)
    await serverloop.serve(proc, table, errors=ERRORS)
