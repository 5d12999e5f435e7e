"""Map keys the wire refuses stay refused on contracted endpoints.

The wire carries maps with ``str`` or ``int`` keys only.  A program's contract may name
``Struct`` fields by other hashable values (bytes, None, a float, a bool), or by an int
that a bool equals (``True == 1``).  A body a schema tests is packed without the shape
walk only when the schema refuses whatever the walk would; a ``Struct`` with such keys
does not, so the sender must get :class:`UnencodableBody` exactly as on a plain
endpoint, and the server must never receive a map with a foreign key.
"""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, Process
from capkern._contract import Contract, Int, Op, Struct, closed

CASES: dict[str, tuple[Any, Any]] = {  # field name in the schema, key the sender uses
    "bytes": (b"k", b"k"),
    "none": (None, None),
    "float": (1.5, 1.5),
    "bool": (True, True),
    "bool-for-int": (1, True),
    "int-for-bool": (True, 1),  # an int key is fine on the wire: delivered as such
}


def _contract(field: Any) -> Contract:
    schema = Struct({field: Int()})
    return Contract("keys", {"put": Op(schema, schema)})


def test_a_struct_with_a_foreign_key_is_not_closed() -> None:
    assert closed(Struct({"a": Struct({"b": Int()})}))
    for field, _ in CASES.values():
        assert not closed(Struct({"a": Struct({field: Int()})})), field


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_foreign_key_gets_the_wire_error(case: str) -> None:
    field, key = CASES[case]
    seen: list[Any] = []
    plain_error: list[type[Exception] | None] = []
    contracted_error: list[type[Exception] | None] = []

    async def server(proc: Process) -> None:
        while True:
            msg = await proc.recv("service")
            seen.append(msg.body)
            proc.reply("ok", msg.body)

    async def sink(proc: Process) -> None:
        while True:
            await proc.recv("service")

    async def client(proc: Process) -> None:
        for slot, errors in (("plain", plain_error), ("s", contracted_error)):
            try:
                proc.nbsend(slot, "put", {key: 5})
            except capkern.CapkernError as exc:
                errors.append(type(exc))
            else:
                errors.append(None)

    async with capkern.boot(paging=False) as k:
        ep = k.new_endpoint("keys", _contract(field))
        plain = k.new_endpoint("plain")
        k.spawn(server, caps={"service": Grant(ep, "r")})
        k.spawn(sink, caps={"service": Grant(plain, "r")})
        status = await k.wait(k.spawn(client, caps={"s": Grant(ep, "w"),
                                                      "plain": Grant(plain, "w")}))
        assert status.ok, status
    assert contracted_error == plain_error
    for body in seen:  # whatever arrived has only keys the wire allows
        assert all(type(k) in (str, int) for k in body), body
    if plain_error == [None]:
        assert case == "int-for-bool"
    else:
        assert plain_error == [capkern.UnencodableBody] and seen == []
