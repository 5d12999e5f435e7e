"""The one server loop (capkern._serverloop): a table of handlers per label served
through any port with recv/reply/reply_error, with the same typed error replies for
every server, and replies that cannot cross contained.  No kernel here: a fake port
stands in for a domain's ``Process`` handle, as a child process's socket will."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from capkern import Grant, Kernel, Process
from capkern import _serverloop as serverloop
from capkern._contract import Any_, Contract, Int, Null, Op, Struct
from capkern._serverloop import DEFERRED, MAX_DETAIL, UNSUPPORTED, clip_detail, error_reply
from capkern.errors import (
    CapkernError,
    ContractViolation,
    InvalidSlot,
    MessageTooLarge,
    ReplyError,
    ServerError,
)


@dataclass
class Req:
    label: str
    body: Any


class Stop(Exception):
    """The fake port has no more requests."""


class FakePort:
    """Records every answer; a reply can be made to fail as the kernel would refuse it."""

    def __init__(self, *requests: Req, refuse: CapkernError | None = None) -> None:
        self.requests = list(requests)
        self.answers: list[tuple[str, Any]] = []
        self.slots: list[int | str] = []
        self.refuse = refuse

    async def recv(self, slot: int | str) -> Req:
        self.slots.append(slot)
        if not self.requests:
            raise Stop
        return self.requests.pop(0)

    def reply(self, label: str = "ok", body: Any = None) -> bool:
        if self.refuse is not None and label == "ok":
            raise self.refuse
        self.answers.append((label, body))
        return True

    def reply_error(self, reason: str, detail: str = "") -> bool:
        return self.reply("error", {"reason": reason, "detail": detail})


class DiskBroke(Exception):
    pass


async def double(body: Any) -> Any:
    return {"n": body["n"] * 2}


async def refuse(body: Any) -> Any:
    raise ServerError("not_found", "no such page")


async def broken(body: Any) -> Any:
    raise DiskBroke("sector 7 unreadable")


async def buggy(body: Any) -> Any:
    raise KeyError("n")


TABLE: serverloop.Table = {"double": double, "refuse": refuse, "broken": broken,
                           "buggy": buggy}


async def _serve(port: FakePort, **kw: Any) -> None:
    with pytest.raises(Stop):
        await serverloop.serve(port, TABLE, **kw)


# -- sans-IO pieces --------------------------------------------------------------------------


def test_error_reply_of_a_server_error_keeps_its_reason_and_detail() -> None:
    assert error_reply(ServerError("io", "disk gone")) == ("io", "disk gone")
    assert error_reply(ServerError("io")) == ("io", "")


def test_error_reply_first_matching_entry_wins_and_unmapped_is_none() -> None:
    errors = ((DiskBroke, "io"), (Exception, "other"))
    assert error_reply(DiskBroke("x"), errors) == ("io", "x")
    assert error_reply(ValueError("y"), errors) == ("other", "y")
    assert error_reply(ValueError("y"), ((DiskBroke, "io"),)) is None
    assert error_reply(ValueError("y")) is None


def test_details_are_clipped_to_fit_the_contract() -> None:
    assert clip_detail("short") == "short"
    long = "x" * 5000
    clipped = clip_detail(long)
    assert len(clipped) == MAX_DETAIL and clipped.startswith("x" * 10)
    assert clip_detail("y" * MAX_DETAIL) == "y" * MAX_DETAIL
    reason, detail = error_reply(ServerError("io", long)) or ("", "")
    assert reason == "io" and len(detail) == MAX_DETAIL
    assert len((error_reply(DiskBroke(long), ((DiskBroke, "io"),)) or ("", ""))[1]) == MAX_DETAIL


async def test_around_wraps_every_label_and_sees_which() -> None:
    seen: list[str] = []

    async def spy(label: str, handler: serverloop.Handler, body: Any) -> Any:
        seen.append(label)
        return await handler(body)

    wrapped = serverloop.around(TABLE, spy)
    assert set(wrapped) == set(TABLE)
    assert await wrapped["double"]({"n": 4}) == {"n": 8}
    with pytest.raises(ServerError):
        await wrapped["refuse"](None)
    assert seen == ["double", "refuse"]


# -- the loop --------------------------------------------------------------------------------


async def test_each_request_gets_its_answer_in_order() -> None:
    port = FakePort(Req("double", {"n": 1}), Req("refuse", None), Req("double", {"n": 5}))
    await _serve(port, slot="svc")
    assert port.answers == [
        ("ok", {"n": 2}),
        ("error", {"reason": "not_found", "detail": "no such page"}),
        ("ok", {"n": 10}),
    ]
    assert port.slots == ["svc"] * 4


async def test_mapped_exceptions_are_typed_errors_with_clipped_detail() -> None:
    async def huge(body: Any) -> Any:
        raise DiskBroke("z" * 4000)

    port = FakePort(Req("broken", None), Req("huge", None))
    with pytest.raises(Stop):
        await serverloop.serve(port, {**TABLE, "huge": huge}, errors=((DiskBroke, "io"),))
    assert port.answers[0] == ("error", {"reason": "io", "detail": "sector 7 unreadable"})
    label, body = port.answers[1]
    assert (label, body["reason"], len(body["detail"])) == ("error", "io", MAX_DETAIL)


async def test_unmapped_exception_ends_the_server_without_an_answer() -> None:
    port = FakePort(Req("buggy", None), Req("double", {"n": 1}))
    with pytest.raises(KeyError):
        await serverloop.serve(port, TABLE)
    assert port.answers == []
    assert port.requests == [Req("double", {"n": 1})]  # nothing after the bug was taken


async def test_a_handlers_own_capkern_error_is_not_mistaken_for_a_refused_reply() -> None:
    async def misuses_a_slot(body: Any) -> Any:
        raise InvalidSlot("slot 99 is not a slot of pager")

    refused: list[CapkernError] = []
    port = FakePort(Req("bad", None))
    with pytest.raises(InvalidSlot):
        await serverloop.serve(port, {"bad": misuses_a_slot}, on_refused=refused.append)
    assert refused == [] and port.answers == []


async def test_unknown_label_is_a_typed_unsupported_error() -> None:
    port = FakePort(Req("format_disk", {}), Req("double", {"n": 2}))
    await _serve(port)
    assert port.answers[0][0] == "error"
    assert port.answers[0][1]["reason"] == UNSUPPORTED
    assert "'format_disk'" in port.answers[0][1]["detail"]
    assert port.answers[1] == ("ok", {"n": 4})


async def test_deferred_handler_is_not_answered_by_the_loop() -> None:
    async def answers_itself(body: Any) -> Any:
        port.reply("ok", "by hand")
        return DEFERRED

    port = FakePort(Req("self", None), Req("double", {"n": 3}))
    with pytest.raises(Stop):
        await serverloop.serve(port, {**TABLE, "self": answers_itself})
    assert port.answers == [("ok", "by hand"), ("ok", {"n": 6})]


@pytest.mark.parametrize("exc", [MessageTooLarge("too big"), ContractViolation("bad reply"),
                                 ReplyError("caller gone")])
async def test_a_reply_that_cannot_cross_is_contained_and_reported(exc: CapkernError) -> None:
    refused: list[CapkernError] = []
    port = FakePort(Req("double", {"n": 1}), Req("double", {"n": 2}), Req("refuse", None),
                    refuse=exc)
    await _serve(port, on_refused=refused.append)
    assert refused == [exc, exc]  # both ok replies refused, the loop went on
    assert port.answers == [("error", {"reason": "not_found", "detail": "no such page"})]


async def test_refused_error_reply_is_contained_without_a_callback() -> None:
    class RefusingErrors(FakePort):
        def reply_error(self, reason: str, detail: str = "") -> bool:
            raise ContractViolation(f"undeclared error reason {reason!r}")

    port = RefusingErrors(Req("refuse", None), Req("double", {"n": 7}))
    await _serve(port)
    assert port.answers == [("ok", {"n": 14})]


# -- through the kernel: a domain's Process handle is a port -----------------------------------

DOUBLER = Contract("doubler", {
    "double": Op(Struct({"n": Int()}), Struct({"n": Int(0, 100)})),
    "refuse": Op(Any_(), Null(), frozenset({"not_found"})),
    "broken": Op(Any_(), Null(), frozenset({"not_found"})),  # "io" is not declared
})


async def test_a_domain_serves_a_table_through_its_process_handle(bare_kernel: Kernel) -> None:
    refused: list[str] = []

    async def server(proc: Process) -> None:
        await serverloop.serve(proc, TABLE, errors=((DiskBroke, "io"),),
                               on_refused=lambda exc: refused.append(type(exc).__name__))

    async def client(proc: Process) -> list[Any]:
        got: list[Any] = [(await proc.call("plain", "double", {"n": 21})).ok()]
        for slot, label, body in [("plain", "refuse", None), ("plain", "nope", None),
                                  ("typed", "double", {"n": 500}), ("typed", "broken", None)]:
            with pytest.raises(CapkernError) as info:
                (await proc.call(slot, label, body)).ok()
            got.append(getattr(info.value, "reason", type(info.value).__name__))
        got.append((await proc.call("typed", "double", {"n": 3})).ok())
        return got

    k = bare_kernel
    plain = k.new_endpoint("plain")
    typed = k.new_endpoint("typed", contract=DOUBLER)
    for ep in (plain, typed):
        k.spawn(server, caps={"service": Grant(ep, "r")})
    results: list[Any] = []

    async def run(proc: Process) -> None:
        results.extend(await client(proc))

    status = await k.wait(k.spawn(run, caps={"plain": Grant(plain, "w"),
                                             "typed": Grant(typed, "w")}))
    assert status.ok, status
    # out-of-contract answers (n=1000 > 100, undeclared "io") were refused: the server was
    # told (ContractViolation) and went on serving; its next recv gave the caller up with
    # ReplyRefused, which names the cause
    assert results == [{"n": 42}, "not_found", UNSUPPORTED, "ReplyRefused", "ReplyRefused",
                       {"n": 6}]
    assert refused == ["ContractViolation", "ContractViolation"]
