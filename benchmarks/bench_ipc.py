"""IPC call/reply round trip vs a raw trio memory-channel round trip (same run)."""

from __future__ import annotations

import time
from typing import Any

import trio

import capkern


async def _raw_round_trips(n: int) -> float:
    to_srv, srv_in = trio.open_memory_channel[Any](0)
    to_cli, cli_in = trio.open_memory_channel[Any](0)

    async def server() -> None:
        async for msg in srv_in:
            await to_cli.send(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        body = {"op": "ping", "n": 0}
        t0 = time.perf_counter()
        for i in range(n):
            body["n"] = i
            await to_srv.send(body)
            await cli_in.receive()
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return elapsed / n


async def _ipc_round_trips(n: int) -> float:
    result: list[float] = []

    async def server(proc: capkern.Process) -> None:
        msg = await proc.recv("ep")
        while True:
            msg = await proc.reply_recv("ep", "ok", msg.body)

    async def client(proc: capkern.Process, n: int) -> None:
        body = {"op": "ping", "n": 0}
        t0 = time.perf_counter()
        for i in range(n):
            body["n"] = i
            await proc.call("ep", "ping", body)
        result.append((time.perf_counter() - t0) / n)

    async with capkern.boot(paging=False) as kernel:
        ep = kernel.new_endpoint("bench")
        kernel.spawn(server, name="server", caps={"ep": ep})
        pid = kernel.spawn(client, n, name="client", caps={"ep": capkern.Grant(ep, "w", 1)})
        status = await kernel.wait(pid)
        assert status.ok, status
    return result[0]


def bench_ipc_call(n: int = 20_000, repeats: int = 5) -> dict[str, Any]:
    """Best-of-``repeats`` microseconds per round trip, IPC and raw, and their ratio."""
    raw = min(trio.run(_raw_round_trips, n) for _ in range(repeats))
    ipc = min(trio.run(_ipc_round_trips, n) for _ in range(repeats))
    return {"value": ipc * 1e6, "baseline": raw * 1e6, "ratio": ipc / raw, "unit": "us"}


if __name__ == "__main__":
    print(bench_ipc_call())
