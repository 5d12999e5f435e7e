"""Calls answered in place (:mod:`capkern._inplace`): a server waiting in a receive that
offered a label answers a call for it at the caller's trap, with its own plain function,
and nothing else about the call changes -- the capability check, fresh msgpack decodes
both ways, the reply checked at the server's reply trap (a refusal is the caller's
``ReplyRefused`` and the server's ``on_refused``), typed errors, and a bug of the answer
ending the server in its own task.  A call that cannot be answered so (capabilities, a
label not offered, a busy server, one that owes a reply, a loop that ended) is handed to
the server's task as before; a caller answered in place still yields now and then."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.lowlevel import Task, current_task

import capkern
from capkern import Grant, Kernel, Process
from capkern import _serverloop as serverloop
from capkern._contract import Contract, Int, Op, Struct
from capkern._inplace import IN_PLACE_YIELD
from capkern.errors import CallAborted, ConfigError, ReplyRefused, ServerError
from capkern.mmu._ports import IpcPort, PagerLink
from capkern.mmu._watchdog import Watchdog

from .helpers import start_server

Answer = Callable[[str, Any], tuple[str, Any]]


class Steps:
    """What a server's own task did: the labels its receives returned (a call handed
    over to it), and the tasks that ran its answers."""

    def __init__(self) -> None:
        self.handed: list[str] = []
        self.answered_on: list[Task] = []
        self.refused: list[Exception] = []


def offering_server(answer: Answer, steps: Steps, labels: tuple[str, ...] = ("x",)
                    ) -> Callable[[Process], Any]:
    """A server that offers ``answer`` for ``labels`` with each receive, and answers
    anything handed to its task with ``("ok", "handed")``."""

    async def server(proc: Process) -> None:
        def recorded(label: str, body: Any) -> tuple[str, Any]:
            steps.answered_on.append(current_task())
            return answer(label, body)

        offer = proc.offer(labels, recorded, steps.refused.append)
        while True:
            msg = await proc.recv("service", offer=offer)
            steps.handed.append(msg.label)
            proc.reply("ok", "handed")

    return server


async def run_client(kernel: Kernel, ep: capkern.RootCap,
                     program: Callable[..., Any]) -> capkern.ExitStatus:
    pid = kernel.spawn(program, name="client", caps={"svc": Grant(ep, "rwg")})
    return await kernel.wait(pid)


def echo(label: str, body: Any) -> tuple[str, Any]:
    return "ok", body


# -- answered in place ---------------------------------------------------------------


async def test_an_offered_call_is_answered_on_the_callers_task(bare_kernel: Kernel) -> None:
    steps = Steps()
    ep, _ = await start_server(bare_kernel, offering_server(echo, steps))
    stats = bare_kernel.stats
    before = (stats.ipc_in_place, stats.ipc_calls, stats.ipc_receives, stats.ipc_replies)
    seen: list[Any] = []

    async def client(proc: Process) -> None:
        seen.append(current_task())
        got = await proc.call("svc", "x", {"n": 1})
        seen.append((got.label, got.body))

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert seen == [steps.answered_on[0], ("ok", {"n": 1})]  # the answer ran on the client
    assert steps.handed == []  # the server's task never stepped
    after = (stats.ipc_in_place, stats.ipc_calls, stats.ipc_receives, stats.ipc_replies)
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1]


async def test_bodies_cross_as_fresh_decodes_both_ways(bare_kernel: Kernel) -> None:
    kept: dict[str, Any] = {}

    def answer(label: str, body: Any) -> tuple[str, Any]:
        kept["request"] = body
        kept["result"] = {"items": [1, 2], "seen": body["items"]}
        return "ok", kept["result"]

    steps = Steps()
    ep, _ = await start_server(bare_kernel, offering_server(answer, steps))
    out: dict[str, Any] = {}

    async def client(proc: Process) -> None:
        sent = {"items": [7, 8]}
        got = await proc.call("svc", "x", sent)
        assert bare_kernel.stats.ipc_in_place == 1
        out["sent"], out["reply"] = sent, got.body
        sent["items"].append(9)  # the caller's object changes after the call
        kept["result"]["items"].append(3)  # and the server's result too
        kept["request"]["items"].append(0)  # and the body the server read

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert kept["request"] is not out["sent"]
    assert kept["request"]["items"] is not out["sent"]["items"]
    assert out["reply"] is not kept["result"]
    assert out["reply"] == {"items": [1, 2], "seen": [7, 8]}  # no later change reached it
    assert out["sent"] == {"items": [7, 8, 9]}  # the server's change did not reach it
    assert kept["request"] == {"items": [7, 8, 0]}


class Broke(Exception):
    pass


def failing(body: Any) -> Any:
    if body == "typed":
        raise ServerError("not_found", "no such thing")
    if body == "mapped":
        raise Broke("disk on fire")
    return body


async def test_typed_errors_are_the_servers_error_replies(bare_kernel: Kernel) -> None:
    async def server(proc: Process) -> None:
        await serverloop.serve(proc, {"x": serverloop.immediate(failing)},
                               errors=((Broke, "io"),))

    ep, pid = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        for body in ("typed", "mapped", "fine"):
            reply = await proc.call("svc", "x", body)
            got.append((reply.label, reply.body))
        with pytest.raises(ServerError) as caught:
            (await proc.call("svc", "x", "typed")).ok()
        got.append(caught.value.reason)

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert got == [("error", {"reason": "not_found", "detail": "no such thing"}),
                   ("error", {"reason": "io", "detail": "disk on fire"}),
                   ("ok", "fine"), "not_found"]
    assert bare_kernel.stats.ipc_in_place == 4
    assert bare_kernel._domain(pid).alive


# -- refused answers ------------------------------------------------------------------


SMALL = Contract("small", {"x": Op(request=Int(), reply=Struct({"n": Int(0, 10)}))})


class Unencodable:
    pass


@pytest.mark.parametrize(("body", "cause"), [
    (b"x" * ((1 << 20) + 1), "MessageTooLarge"),
    (Unencodable(), "UnencodableBody"),
    ({"n": 99}, "out of contract"),
])
async def test_a_refused_answer_fails_the_caller_and_the_server_keeps_serving(
        bare_kernel: Kernel, body: Any, cause: str) -> None:
    def answer(label: str, request: Any) -> tuple[str, Any]:
        return "ok", body if request == 1 else {"n": request}

    steps = Steps()
    contract = SMALL if cause == "out of contract" else None
    ep, pid = await start_server(bare_kernel, offering_server(answer, steps), contract)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        with pytest.raises(ReplyRefused) as caught:
            await proc.call("svc", "x", 1)
        got.append(str(caught.value))
        got.append((await proc.call("svc", "x", 2)).body)

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert cause in got[0]
    assert got[1] == {"n": 2}
    assert len(steps.refused) == 1 and isinstance(steps.refused[0], capkern.CapkernError)
    assert bare_kernel.stats.ipc_in_place == 2 and steps.handed == []
    assert bare_kernel._domain(pid).alive


# -- a bug of the answer ends the server ----------------------------------------------


async def _end_server_by(kernel: Kernel, server: Callable[[Process], Any]
                         ) -> tuple[capkern.ExitStatus, list[Any]]:
    ep, pid = await start_server(kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        with pytest.raises(CallAborted) as caught:
            await proc.call("svc", "x", 1)
        got.append(type(caught.value))

    assert (await run_client(kernel, ep, client)).state == "exited"
    status = await kernel.wait(pid)

    async def bystander(proc: Process) -> int:  # the kernel and other domains are fine
        ep2 = proc.new_endpoint("other")
        return 0 if proc.nbsend(ep2, "hi") is False else 1

    assert (await kernel.wait(kernel.spawn(bystander))).code == 0
    return status, got


async def test_an_unmapped_exception_ends_the_server(bare_kernel: Kernel) -> None:
    def answer(label: str, body: Any) -> tuple[str, Any]:
        raise Broke("a bug")

    stats = bare_kernel.stats
    before = (stats.ipc_calls, stats.ipc_receives, stats.ipc_replies)
    status, got = await _end_server_by(bare_kernel, offering_server(answer, Steps()))
    assert status.state == "failed" and "Broke" in (status.error or "")
    assert got == [CallAborted]
    # the server's one receive took the call (handed to it): no receive or reply more
    after = (stats.ipc_calls, stats.ipc_receives, stats.ipc_replies)
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 0]


async def test_deferred_from_an_immediate_handler_ends_the_server(bare_kernel: Kernel) -> None:
    async def server(proc: Process) -> None:
        await serverloop.serve(proc, {"x": serverloop.immediate(lambda b: serverloop.DEFERRED)})

    status, got = await _end_server_by(bare_kernel, server)
    assert status.state == "failed" and "DEFERRED" in (status.error or "")
    assert got == [CallAborted]


async def test_exit_inside_an_answer_ends_the_server_with_its_code(bare_kernel: Kernel) -> None:
    handle: list[Process] = []

    def answer(label: str, body: Any) -> tuple[str, Any]:
        handle[0].exit(7)

    inner = offering_server(answer, Steps())

    async def server(proc: Process) -> None:
        handle.append(proc)
        await inner(proc)

    status, got = await _end_server_by(bare_kernel, server)
    assert (status.state, status.code) == ("exited", 7)
    assert got == [CallAborted]


# -- handed over, not answered in place -----------------------------------------------


async def test_a_call_carrying_capabilities_is_handed_over(bare_kernel: Kernel) -> None:
    steps = Steps()
    ep, _ = await start_server(bare_kernel, offering_server(echo, steps))

    async def client(proc: Process) -> None:
        spare = proc.new_endpoint("gift")
        assert (await proc.call("svc", "x", 1, caps=[spare])).body == "handed"

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert steps.handed == ["x"] and bare_kernel.stats.ipc_in_place == 0


async def test_a_label_not_offered_is_handed_over(bare_kernel: Kernel) -> None:
    steps = Steps()
    ep, _ = await start_server(bare_kernel, offering_server(echo, steps))

    async def client(proc: Process) -> None:
        assert (await proc.call("svc", "y", 1)).body == "handed"
        assert (await proc.call("svc", "x", 2)).body == 2

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert steps.handed == ["y"] and bare_kernel.stats.ipc_in_place == 1


async def test_a_server_busy_in_a_slow_handler_gets_its_calls_queued(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    order: list[str] = []

    async def slow(body: Any) -> Any:
        await trio.sleep(5)
        order.append("slow")
        return "slow"

    def quick(body: Any) -> Any:
        order.append("quick")
        return "quick"

    async def server(proc: Process) -> None:
        await serverloop.serve(proc, {"slow": slow, "x": serverloop.immediate(quick)})

    ep, _ = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process, label: str, delay: float) -> None:
        await trio.sleep(delay)
        got.append((await proc.call("svc", label, None)).body)
        got.append(trio.current_time())

    a = bare_kernel.spawn(client, "slow", 0, caps={"svc": Grant(ep, "w")})
    b = bare_kernel.spawn(client, "x", 1, caps={"svc": Grant(ep, "w")})
    await bare_kernel.wait(a)
    await bare_kernel.wait(b)
    assert order == ["slow", "quick"]  # queued behind the slow request, as before
    assert got[0::2] == ["slow", "quick"] and got[3] >= got[1]
    assert bare_kernel.stats.ipc_in_place == 0


async def test_a_server_that_owes_a_reply_gets_the_call_handed_over(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    steps = Steps()

    async def server(proc: Process) -> None:
        offer = proc.offer(["x"], echo)
        first = await proc.recv("service", offer=offer)  # a call it will not answer now
        steps.handed.append(first.label)
        second = await proc.recv("service", offer=offer)  # it still owes the first caller
        steps.handed.append(second.label)
        proc.reply("ok", "handed")

    ep, _ = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process, label: str, delay: float) -> None:
        await trio.sleep(delay)
        try:
            got.append((label, (await proc.call("svc", label, None)).body))
        except CallAborted:
            got.append((label, "aborted"))

    a = bare_kernel.spawn(client, "y", 0, caps={"svc": Grant(ep, "w")})
    b = bare_kernel.spawn(client, "x", 1, caps={"svc": Grant(ep, "w")})
    with trio.fail_after(60):
        await bare_kernel.wait(a)
        await bare_kernel.wait(b)
    assert steps.handed == ["y", "x"]
    assert sorted(got) == [("x", "handed"), ("y", "aborted")]  # as a hand-off always did
    assert bare_kernel.stats.ipc_in_place == 0


async def test_after_the_serve_loop_ends_a_plain_receive_gets_calls_handed_over(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    steps = Steps()

    async def server(proc: Process) -> None:
        with trio.move_on_after(1):
            await serverloop.serve(proc, {"x": serverloop.immediate(lambda b: b)})
        while True:
            msg = await proc.recv("service")
            steps.handed.append(msg.label)
            proc.reply("ok", "handed")

    ep, _ = await start_server(bare_kernel, server)

    async def client(proc: Process) -> None:
        assert (await proc.call("svc", "x", 1)).body == 1  # the loop still serves
        await trio.sleep(2)
        assert (await proc.call("svc", "x", 2)).body == "handed"

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert steps.handed == ["x"] and bare_kernel.stats.ipc_in_place == 1


async def test_revoking_the_receive_capability_ends_answers_in_place(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    steps = Steps()
    ep, pid = await start_server(bare_kernel, offering_server(echo, steps))
    await bare_kernel.revoke(ep)  # the server's "service" is derived from it
    status = await bare_kernel.wait(pid)
    assert status.state == "failed" and "CapabilityRevoked" in (status.error or "")

    async def client(proc: Process) -> None:
        with trio.move_on_after(1) as scope:
            await proc.call("svc", "x", 1)
        assert scope.cancelled_caught  # queued: nobody answers

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert bare_kernel.stats.ipc_in_place == 0 and steps.answered_on == []


# -- tracing --------------------------------------------------------------------------


def _shape(kernel: Kernel) -> tuple[list[Any], list[Any], list[bool]]:
    trace = kernel.trace
    records = [(r.op, r.domain, re.sub(r"#\d+", "", r.object), r.label, r.badge,
                r.body_bytes, r.caps)
               for r in trace.records]
    deliveries = [(d.domain, d.label) for d in trace.deliveries]
    flows = {f for f in trace.flows if f}
    return records, deliveries, [d.flow in flows for d in trace.deliveries]


async def test_a_traced_call_answered_in_place_leaves_the_handed_over_records() -> None:
    shapes = []
    for in_place in (True, False):
        async with capkern.boot(paging=False, trace=True) as kernel:
            steps = Steps()
            ep, _ = await start_server(kernel, offering_server(
                lambda label, body: ("ok", "handed"), steps, ("x",) if in_place else ()))

            async def client(proc: Process) -> None:
                assert (await proc.call("svc", "x", {"n": 1})).body == "handed"

            kernel.trace.clear()
            assert (await run_client(kernel, ep, client)).state == "exited"
            assert kernel.stats.ipc_in_place == (1 if in_place else 0)
            shapes.append(_shape(kernel))
    assert shapes[0] == shapes[1]
    records, deliveries, matched = shapes[0]
    assert [r[0] for r in records] == ["call", "reply"]
    assert deliveries == [("server", "x"), ("client", "ok")] and all(matched)


# -- scheduling -----------------------------------------------------------------------


class Ticker:
    """A task that counts its turns while the block runs: how often others got to run."""

    def __init__(self) -> None:
        self.ticks = 0
        self._nursery: trio.Nursery | None = None
        self._cm = trio.open_nursery()

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Ticker:
        self._nursery = await self._cm.__aenter__()
        self._nursery.start_soon(self._tick)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._cm.__aexit__(*exc)


async def test_a_program_making_only_answered_calls_lets_others_run(
        bare_kernel: Kernel) -> None:
    ep, _ = await start_server(bare_kernel, offering_server(echo, Steps()))
    calls = 1000
    ran: list[int] = []

    async def client(proc: Process) -> None:
        await trio.lowlevel.checkpoint()
        start_ticks = ticker.ticks
        for i in range(calls):
            await proc.call("svc", "x", i)
        ran.append(ticker.ticks - start_ticks)

    async with Ticker() as ticker:
        await run_client(bare_kernel, ep, client)
    assert bare_kernel.stats.ipc_in_place == calls
    assert IN_PLACE_YIELD <= 16 and ran[0] >= calls // 16 - 2  # about 1000/16 at least


async def test_a_pager_call_answered_in_place_still_yields(bare_kernel: Kernel) -> None:
    ep, _ = await start_server(bare_kernel, offering_server(echo, Steps()))
    watchdog = Watchdog()
    bare_kernel.start_soon(watchdog.run, name="watchdog")
    root = bare_kernel.root
    port = IpcPort(root, root.cspace.lookup(root.cspace.insert_derived(
        root.cspace.lookup(ep.slot), capkern.Rights.WRITE, None)), watchdog)
    link = PagerLink(port, 1.0, bare_kernel.stats)
    async with Ticker() as ticker:
        await trio.lowlevel.checkpoint()
        first = ticker.ticks
        for i in range(20):
            assert await link.call("x", i) == i
        ran = ticker.ticks - first
    assert bare_kernel.stats.ipc_in_place == 20
    assert ran >= 19  # every call yielded


# -- Process.offer's arguments ---------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda p: p.offer("x", echo),
    lambda p: p.offer(5, echo),
    lambda p: p.offer([1], echo),
    lambda p: p.offer([""], echo),
    lambda p: p.offer(["x"], "not callable"),
    lambda p: p.offer(["x"], echo, on_refused=3),
    lambda p: p.recv("service", offer=object()),
    lambda p: p.reply_recv("service", offer=("x", echo)),
])
async def test_offer_refuses_bad_arguments(bare_kernel: Kernel,
                                           make: Callable[[Process], Any]) -> None:
    caught: list[BaseException] = []

    async def server(proc: Process) -> None:
        try:
            make(proc)
        except BaseException as exc:
            caught.append(exc)

    ep = bare_kernel.new_endpoint("svc")
    await bare_kernel.wait(bare_kernel.spawn(server, caps={"service": Grant(ep, "r")}))
    assert len(caught) == 1 and isinstance(caught[0], ConfigError)


# -- paging end to end ----------------------------------------------------------------


async def test_paging_through_few_frames_keeps_data_and_answers_in_place() -> None:
    pages = 48
    async with capkern.boot(ram_pages=16) as kernel:
        async def sweep(proc: Process) -> int:
            base = proc.mmap(pages * 4096)
            for rnd in range(2):
                for i in range(pages):
                    await proc.write(base + i * 4096, bytes([rnd, i]) * 8)
                for i in range(pages):
                    if await proc.read(base + i * 4096, 16) != bytes([rnd, i]) * 8:
                        return 1
            return 0

        status = await kernel.wait(kernel.spawn(sweep))
        assert (status.state, status.code) == ("exited", 0)
        stats = kernel.stats
        assert stats.page_ins >= pages and stats.evictions >= pages  # it did page
        assert stats.integrity_faults == 0
        assert stats.ipc_in_place > 0  # seal/unseal and the disk's read/write in place


async def test_a_killed_server_answers_nothing_in_place(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    steps = Steps()
    ep, pid = await start_server(bare_kernel, offering_server(echo, steps))
    bare_kernel.kill(pid)  # its receive is withdrawn at once, before its task unwinds

    async def client(proc: Process) -> None:
        with trio.move_on_after(1) as scope:
            await proc.call("svc", "x", 1)
        assert scope.cancelled_caught

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert (await bare_kernel.wait(pid)).state == "killed"
    assert steps.answered_on == [] and bare_kernel.stats.ipc_in_place == 0


async def test_a_server_that_survives_its_answers_raise_holds_the_call(
        bare_kernel: Kernel) -> None:
    """The raise comes out of the server's receive, holding the call as if received:
    a server that catches it may still answer, from its own task."""
    caught: list[str] = []

    def answer(label: str, body: Any) -> tuple[str, Any]:
        raise Broke(f"no {body}")

    async def server(proc: Process) -> None:
        offer = proc.offer(["x"], answer)
        while True:
            try:
                msg = await proc.recv("service", offer=offer)
            except Broke as exc:
                caught.append(str(exc))
                proc.reply("ok", "answered after all")
                continue
            proc.reply("ok", msg.body)

    ep, pid = await start_server(bare_kernel, server)

    async def client(proc: Process) -> None:
        assert (await proc.call("svc", "x", 1)).body == "answered after all"

    assert (await run_client(bare_kernel, ep, client)).state == "exited"
    assert caught == ["no 1"] and bare_kernel._domain(pid).alive
