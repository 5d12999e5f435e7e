"""``capkern serve pager --listen HOST:PORT``: a pager (and its block device) as a
standalone server -- far memory on an untrusted host (UNTRUSTED).

It speaks the same frames as a child process, over TCP: the kernel connects, sends its
``hello``, and relays the PAGER contract's requests; the wire carries only sealed pages
and opaque handles.  The pager's block device lives here, beside it (its calls never
cross the network).  One kernel at a time; a lost connection ends that pager
incarnation (the kernel treats it as a crash and reconnects), and the next connection
gets a fresh pager.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any

from ... import _serverloop as serverloop
from ... import _wire as wire
from ..._ipc import Received
from ...isolation._child import Link, read_hello, serve_link
from ..blockdev import ERRORS, BlockBackend, backend_handlers, open_backend
from ._policy import POLICIES

__all__ = ["local_blockdev", "serve_pager"]


def local_blockdev(backend: BlockBackend) -> Callable[[str, Any], Any]:
    """The block device as an in-process call (for a pager on the same host)."""

    table = backend_handlers(backend)

    async def call(label: str, body: Any) -> Received:
        handler = table.get(label)
        out: Any
        if handler is None:
            out = {"reason": serverloop.UNSUPPORTED, "detail": f"no handler for {label!r}"}
            label = "error"
        else:
            try:
                out, label = await handler(body), "ok"
            except Exception as exc:
                answer = serverloop.error_reply(exc, ERRORS)
                if answer is None:
                    raise
                out, label = {"reason": answer[0], "detail": answer[1]}, "error"
        raw = wire.encode(out, wire.Limits())
        return Received(label, raw, wire.decode(raw), 0, ())

    return call


def serve_pager(host: str, port: int, policy: str = "clock", blockdev: str = "memory",
                nblocks: int = 8192, ready: Callable[[int], None] | None = None) -> None:
    """Serve kernels one after another, forever (until interrupted)."""
    if policy not in POLICIES:
        raise SystemExit(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    backend = open_backend(blockdev, nblocks)
    server = socket.create_server((host, port))
    if ready is not None:
        ready(server.getsockname()[1])
    try:
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(conn, exit_on_eof=False)
            hello = read_hello(link)
            if hello is not None:
                # whatever the kernel names, this host runs its own pager and device
                hello = ["hello", "capkern.servers.pager._server:pager_server", "program", [],
                         [policy], hello[5], hello[6], {}]
                code, error = serve_link(link, hello, {"blockdev": local_blockdev(backend)})
                print(f"kernel disconnected ({error or code})", file=sys.stderr)
            conn.close()
    finally:
        server.close()
        backend.close()
