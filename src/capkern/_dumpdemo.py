"""``capkern dump``: boot, run a small scenario, and print the system as capDL, DOT or JSON.

The scenario is chosen to show every shape the dump has: an endpoint with a contract-free
echo server blocked in ``recv``, two clients holding badged ``w`` capabilities minted
from the root's original (one has finished, one is still running and has paged memory),
a capability a client copied and passed on by IPC (a grandchild in the derivation tree),
a notification, and a root capability revoked on the way.
"""

from __future__ import annotations

from typing import Any

import trio

from . import programs
from ._config import Grant
from ._proc import Process
from ._root import boot

__all__ = ["run_dump"]


async def _holder(proc: Process) -> None:
    """Receives one capability on its endpoint, names it, then waits to be killed."""
    got = await proc.recv("inbox")
    proc.name_slot(got.caps[0], "from-client")
    await trio.sleep_forever()


async def _client(proc: Process) -> None:
    """Calls the echo server, maps and touches memory, passes a copy of its cap on."""
    await proc.call("server", "echo", "hello")
    base = proc.mmap(3 * 4096)
    await proc.write(base, b"sealed when evicted")
    copy = proc.copy("server", "w", name="spare")
    await proc.send("holder", "cap", None, caps=[copy])
    await trio.sleep_forever()


async def _scenario(fmt: str, trace: str | None) -> str | dict[str, Any]:
    async with boot(ram_pages=4, trace=trace is not None) as kernel:
        echo = kernel.new_endpoint("echo")
        inbox = kernel.new_endpoint("inbox")
        kernel.new_notification("tick")
        doomed = kernel.mint(echo, "w", badge=99)
        kernel.spawn(programs.echo_server, name="echo-server",
                     caps={"service": Grant(echo, "r")})
        kernel.spawn(_holder, name="holder", caps={"inbox": Grant(inbox, "r")})
        done = kernel.spawn(programs.echo_client, 2, name="client1",
                            caps={"server": Grant(echo, "w", badge=1)})
        kernel.spawn(_client, name="client2",
                     caps={"server": Grant(echo, "wg", badge=2),
                           "holder": Grant(inbox, "wg")})
        kernel.spawn(programs.echo_client, 1, name="revoked",
                     caps={"server": Grant(doomed, "w")})
        await kernel.revoke(doomed)
        await kernel.wait(done)
        await trio.sleep(0.05)
        snapshot = kernel.dump() if fmt == "json" else kernel.dump(fmt)  # type: ignore[call-overload]
        if trace is not None:
            kernel.export_trace(trace)
        return snapshot


def run_dump(fmt: str, trace: str | None = None) -> str | dict[str, Any]:
    """Run the scenario; its dump in ``fmt`` (json: a dict; capdl, dot: text)."""
    return trio.run(_scenario, fmt, trace)
