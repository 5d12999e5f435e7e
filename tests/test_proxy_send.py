"""The proxy's frame sending: a non-blocking fast path, a locked slow path for the rest.

A frame the socket takes whole is sent at once; a frame larger than the socket buffer is
sent partly by the fast path and finished by the locked ``send_all``.  Either way the
child must see every byte once, in order: these tests push bodies of many sizes (up to
the kernel's limit, far above a Unix socket's buffer) through a real child process and
check each echo is exactly what was sent.
"""

from __future__ import annotations

import trio

from capkern import Process, boot
from capkern._bench import echo_server
from capkern._config import Grant
from capkern.isolation import spawn_isolated


async def test_bodies_larger_than_the_socket_buffer_cross_whole_and_in_order() -> None:
    got: list[bytes] = []
    sizes = [1, 100, 70_000, 1, 300_000, 5, 700_000, 2]

    async with boot(paging=False) as kernel:
        limit = kernel.limits.max_body_bytes
        sizes.append(limit - 64)  # the largest body the kernel takes, plus framing

        async def client(proc: Process) -> None:
            for i, n in enumerate(sizes):
                body = bytes([i % 251]) * n
                reply = await proc.call("ep", "echo", body)
                got.append(reply.body)

        ep = kernel.new_endpoint("echo")
        spawn_isolated(kernel, echo_server, name="echo", caps={"ep": ep})
        pid = kernel.spawn(client, name="client", caps={"ep": Grant(ep, "w", 1)})
        with trio.fail_after(60):
            status = await kernel.wait(pid)
    assert status.ok, status
    assert [len(b) for b in got] == sizes
    assert all(b == bytes([i % 251]) * n for i, (b, n) in enumerate(zip(got, sizes, strict=True)))


async def test_concurrent_callers_each_get_their_own_echo() -> None:
    """Several clients at once, small and large bodies mixed: no frame is torn or
    swapped when a large write is still going on as the next answer is sent."""
    results: dict[int, list[bool]] = {}

    async with boot(paging=False) as kernel:
        async def client(proc: Process, me: int) -> None:
            ok = results.setdefault(me, [])
            for i in range(6):
                body = f"{me}:{i}:".encode() * (1 + (40_000 if (me + i) % 3 == 0 else 0))
                reply = await proc.call("ep", "echo", body)
                ok.append(reply.body == body)

        ep = kernel.new_endpoint("echo")
        spawn_isolated(kernel, echo_server, name="echo", caps={"ep": ep})
        pids = [kernel.spawn(client, me, name=f"c{me}", caps={"ep": Grant(ep, "w", me + 1)})
                for me in range(4)]
        with trio.fail_after(60):
            statuses = [await kernel.wait(pid) for pid in pids]
    assert all(s.ok for s in statuses), statuses
    assert results == {me: [True] * 6 for me in range(4)}
