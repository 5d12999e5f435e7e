"""A received message's ``body`` is a plain attribute, decoded from the bytes once and
never an object the sender holds.

A message in flight is decoded at the sender's trap (kernel code), from the bytes, for
the receiver alone -- the kernel's own requests included; only bytes a trusted relay
passes on (``Received.lazy``) are decoded on the receiver's first read of ``body``."""

from __future__ import annotations

import msgpack
import pytest
import trio

import capkern
from capkern import Grant, Process
from capkern._ipc import Received, kernel_message


def test_a_lazy_body_is_decoded_once_on_first_read() -> None:
    raw = msgpack.packb({"n": [1, 2], 3: "x"})
    msg = Received.lazy("m", raw, 7, ())
    first = msg.body
    assert first == {"n": [1, 2], 3: "x"}
    assert msg.body is first  # decoded once: the same object on every read
    assert msg.size == len(raw)
    assert "body={'n': [1, 2], 3: 'x'}" in repr(msg)


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    msg = Received.lazy("m", msgpack.packb(1), 0, ())
    with pytest.raises(AttributeError):
        msg.bodyy  # type: ignore[attr-defined]  # noqa: B018
    assert msg.body == 1


def test_a_decoded_body_is_not_the_object_given() -> None:
    given = {"k": [1]}
    msg = Received("m", msgpack.packb(given), given, 0, ())
    assert msg.body is given  # a value already decoded is kept as it is...
    lazy = Received.lazy("m", msgpack.packb(given), 0, ())
    assert lazy.body == given and lazy.body is not given  # ...bytes give fresh objects


async def test_a_kernel_built_request_shares_nothing_with_the_kernel(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    """The kernel's own request is decoded at its trap: a body the kernel changes
    afterwards does not change what the server receives."""
    k = bare_kernel
    ep = k.new_endpoint()
    body = {"page": [1, 2, 3]}
    root = k.root
    cap = root.cspace.lookup(k.mint(ep, "w").slot)
    msg = kernel_message(root, cap, "fetch", body)
    body["page"].append(4)
    assert msg.body == {"page": [1, 2, 3]}
    assert msg.body["page"] is not body["page"]


async def test_a_body_crossing_with_capabilities_is_decoded_by_the_receiver(
        autojump_clock: trio.abc.Clock, bare_kernel: capkern.Kernel) -> None:
    """A message with capabilities is copied into the receiver's terms; its body (no
    contract checks it) is decoded from the bytes, so the sender changing its own object
    afterwards changes nothing the receiver sees."""
    got: list[object] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("service")
        got.extend([msg.body, msg.body is msg.body, len(msg.caps)])

    async def client(proc: Process) -> None:
        body = {"n": [5]}
        await proc.send("out", "m", body, caps=["extra"])
        body["n"].append(6)

    k = bare_kernel
    ep, extra = k.new_endpoint(), k.new_endpoint()
    srv = k.spawn(server, caps={"service": Grant(ep, "r")})
    await trio.sleep(1)
    cli = k.spawn(client, caps={"out": Grant(ep, "rwg"), "extra": Grant(extra, "r")})
    assert (await k.wait(cli)).ok
    assert (await k.wait(srv)).ok
    assert got == [{"n": [5]}, True, 1]
