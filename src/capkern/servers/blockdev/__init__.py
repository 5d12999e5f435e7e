"""The block device server and its backends (UNTRUSTED).

A backend is a fixed array of blocks (:class:`MemoryBackend`, :class:`FileBackend`, or
your own :class:`BlockBackend` -- a malicious disk is just another backend);
:func:`serve_backend` serves one on a domain's ``service`` endpoint.
"""

from ._async import AsyncBlockBackend, SyncBackend, as_async
from ._backends import (
    BackendIOError,
    BlockBackend,
    BlockDevError,
    DeviceClosed,
    FileBackend,
    MemoryBackend,
    Misaligned,
    OutOfRange,
    open_backend,
)
from ._nbd import NBDBackend, open_nbd
from ._server import ERRORS, backend_handlers, blockdev_server, serve_backend

__all__ = [
    "ERRORS",
    "AsyncBlockBackend",
    "NBDBackend",
    "SyncBackend",
    "as_async",
    "open_nbd",
    "BackendIOError",
    "BlockBackend",
    "BlockDevError",
    "DeviceClosed",
    "FileBackend",
    "MemoryBackend",
    "Misaligned",
    "OutOfRange",
    "backend_handlers",
    "blockdev_server",
    "open_backend",
    "serve_backend",
]
