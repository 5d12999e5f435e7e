"""The block device server and its backends (UNTRUSTED).

A backend is a fixed array of blocks (:class:`MemoryBackend`, :class:`FileBackend`, or
your own :class:`BlockBackend` -- a malicious disk is just another backend);
:func:`serve_backend` serves one on a domain's ``service`` endpoint.
"""

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
from .server import ERRORS, backend_handlers, blockdev_server, serve_backend

__all__ = [
    "ERRORS",
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
