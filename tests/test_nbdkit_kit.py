"""The kit's nbdkit launcher: ready when it yields, gone after the block, clear when it
cannot start."""

from __future__ import annotations

import pytest
import trio

from capkern.testing.nbdkit import NBDKitUnavailable, nbdkit_path, nbdkit_server

pytestmark = pytest.mark.skipif(nbdkit_path() is None,
                                reason="nbdkit is not installed (apt-get install nbdkit)")


@pytest.mark.parametrize("tcp", [False, True])
async def test_listening_when_yielded_and_stopped_after(tcp: bool) -> None:
    async with nbdkit_server("1M", tcp=tcp) as srv:
        proc = srv.process
        if tcp:
            host, port = srv.spec.removeprefix("nbd://").rstrip("/").split(":")
            stream = await trio.open_tcp_stream(host, int(port))
        else:
            stream = await trio.open_unix_socket(srv.spec.split("socket=", 1)[1])
        async with stream:
            assert (await stream.receive_some(8)).startswith(b"NBDMAG")
    assert proc.poll() is not None  # stopped, reaped


async def test_a_server_that_cannot_start_says_why() -> None:
    with pytest.raises(NBDKitUnavailable, match="no-such-plugin"):
        async with nbdkit_server(plugin="no-such-plugin"):
            pass
