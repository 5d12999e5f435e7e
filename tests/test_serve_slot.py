"""The server loop resolves its slot *name* once, through the port's ``slot`` if it has
one, and receives by index; the capability in the slot is still looked up at every
receive, so revoking or deleting it stops the server at its next receive."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import Grant, Kernel, Process
from capkern import _serverloop as serverloop
from capkern.errors import CapkernError, EmptySlot


class Stop(Exception):
    """No more requests."""


class NamingPort:
    """A port that can resolve slot names (as a Process handle can)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.resolved: list[str] = []
        self.received_on: list[int | str] = []
        self.answers: list[Any] = []

    def slot(self, name: str) -> int:
        self.resolved.append(name)
        return 7

    async def recv(self, slot: int | str) -> Any:
        self.received_on.append(slot)
        if not self.left:
            raise Stop
        self.left -= 1

        class Req:
            label, body = "echo", self.left
        return Req()

    def reply(self, label: str = "ok", body: Any = None) -> bool:
        self.answers.append(body)
        return True

    def reply_error(self, reason: str, detail: str = "") -> bool:
        raise AssertionError(reason)


async def _echo(body: Any) -> Any:
    return body


async def test_the_name_is_resolved_once_and_every_receive_uses_the_slot() -> None:
    port = NamingPort(3)
    with pytest.raises(Stop):
        await serverloop.serve(port, {"echo": _echo}, slot="service")
    assert port.resolved == ["service"]
    assert port.received_on == [7, 7, 7, 7] and port.answers == [2, 1, 0]


async def test_an_index_is_used_as_given() -> None:
    port = NamingPort(1)
    with pytest.raises(Stop):
        await serverloop.serve(port, {"echo": _echo}, slot=3)
    assert port.resolved == [] and port.received_on == [3, 3]


async def test_a_deleted_service_capability_stops_the_server_at_its_next_receive(
        bare_kernel: Kernel) -> None:
    errors: list[str] = []
    served = trio.Event()

    async def server(proc: Process) -> None:
        async def echo(body: Any) -> Any:
            served.set()
            proc.delete("service")  # the name's slot empties while the loop runs
            return body

        try:
            await serverloop.serve(proc, {"echo": echo})
        except CapkernError as exc:
            errors.append(type(exc).__name__)

    async def client(proc: Process) -> None:
        assert (await proc.call("s", "echo", 5)).body == 5

    k = bare_kernel
    ep = k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w")}))
    assert status.ok, status
    assert (await k.wait(srv)).ok
    assert served.is_set() and errors == [EmptySlot.__name__]
