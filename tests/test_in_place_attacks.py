"""Attacks on calls answered in place (:mod:`capkern._inplace`) with the public API: an
answer runs the server's code at its *caller's* trap -- on the caller's task, for a pager
the kernel's fault path, for a block device its pager -- so whatever that code does with
its own ``Process`` handle must not reach the caller's task.  A receive, call, send or
wait it drives by hand would park the caller's task in the server's place (the next
message to it would wake the caller in the middle of something else: wrong data, or
Trio's internal error ending the whole kernel); it gets a typed error instead.  The same
for the code an answer's result runs while the kernel encodes it.  Changing an offer
after making it, raising ``BaseException`` subclasses, encodings that run code, huge or
deep values, keeping bodies to mutate later, deleting or sending to its own receive
capability: typed errors, never wrong data, the kernel and other domains unharmed."""

from __future__ import annotations

import decimal
import sys
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio.lowlevel import Task, current_task

import capkern
from capkern import Grant, Kernel, Process
from capkern import _serverloop as serverloop
from capkern._contract import Contract, Int, Op, Struct
from capkern.errors import CallAborted, CapkernError, IPCError, ReplyRefused
from capkern.servers.blockdev import MemoryBackend, serve_backend
from capkern.servers.pager import Pager
from capkern.servers.pager._policy import make_policy

from .helpers import start_server

Trick = Callable[[Process, list[Any]], Any]


def in_place(trick: Trick, home: list[Task]) -> Trick:
    """``trick``, run only when its server's code runs on another task than its own
    (``home``): in an answer in place.  (A server driving the kernel by hand on its own
    task only harms itself; here it must not harm its caller.)"""

    def run(proc: Process, seen: list[Any]) -> None:
        if current_task() is not home[0]:
            trick(proc, seen)

    return run


def drive(coro: Coroutine[Any, Any, Any], seen: list[Any]) -> None:
    """Step ``coro`` by hand once (as an attacker re-entering the kernel would) and keep
    it, noting what stepping it raised."""
    try:
        coro.send(None)
        seen.append("stepped")
    except StopIteration:
        seen.append("finished")
    except BaseException as exc:
        seen.append(exc)
        coro.close()
        return
    seen.append(coro)  # kept, never finished


def hand_recv(proc: Process, seen: list[Any]) -> None:
    drive(proc.recv("service"), seen)


def _target(proc: Process) -> int | str:
    """Somewhere to call or send: another server it may call (a pager's disk), else its
    own endpoint (if it may send there), else a new endpoint of its own."""
    names = {c.name: c for c in proc.caps()}
    if "blockdev" in names:
        return "blockdev"
    if "service" in names and "w" in str(names["service"].rights).lower():
        return "service"
    return proc.new_endpoint("own")


def hand_call(proc: Process, seen: list[Any]) -> None:
    drive(proc.call(_target(proc), "info", {}), seen)


def hand_send(proc: Process, seen: list[Any]) -> None:
    drive(proc.send(_target(proc), "info", {}), seen)


def hand_wait(proc: Process, seen: list[Any]) -> None:
    if not seen:
        seen.append(proc.new_notification("bell"))
    drive(proc.wait("bell"), seen)
    proc.signal("bell")  # the second time round, wakes what the first parked


def hand_revoke(proc: Process, seen: list[Any]) -> None:
    if not seen:
        proc.copy("service", "r", "child")
    drive(proc.revoke("service"), seen)


HAND_DRIVEN = [hand_recv, hand_call, hand_send, hand_wait, hand_revoke]


class Bug(Exception):
    pass


def raise_bug(proc: Process, seen: list[Any]) -> None:
    seen.append("raised")
    raise Bug("the server's own bug")


def exit_now(proc: Process, seen: list[Any]) -> None:
    seen.append("exit")
    proc.exit(0)


def delete_receive(proc: Process, seen: list[Any]) -> None:
    seen.append("deleted")
    proc.delete("service")


#: answers that end the server (or its receive): the fault path copes
ENDING = [raise_bug, exit_now, delete_receive]


def refused_to_block(seen: list[Any]) -> bool:
    """Every operation driven inside an answer was refused with a typed error."""
    steps = [s for s in seen if isinstance(s, BaseException) or s in ("stepped", "finished")]
    return bool(steps) and all(isinstance(s, IPCError) for s in steps)


# -- a server program answering another domain -------------------------------------------


def serving_with(trick: Trick, seen: list[Any]) -> Callable[[Process], Any]:
    async def server(proc: Process) -> None:
        here = in_place(trick, [current_task()])

        def answer(label: str, body: Any) -> tuple[str, Any]:
            here(proc, seen)
            return "ok", body

        offer = proc.offer(["x"], answer)
        while True:
            msg = await proc.recv("service", offer=offer)
            proc.reply("ok", ["handed", msg.label])

    return server


@pytest.mark.parametrize("trick", HAND_DRIVEN, ids=lambda t: t.__name__)
async def test_an_answer_cannot_park_its_callers_task(
        trick: Trick, capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []
    got: list[Any] = []
    async with capkern.boot(paging=False) as kernel:
        ep = kernel.new_endpoint("svc")
        server = kernel.spawn(serving_with(trick, seen), name="server", kind="server",
                              caps={"service": Grant(ep, "rw")})
        await trio.testing.wait_all_tasks_blocked()

        async def client(proc: Process, n: int) -> None:
            for i in range(3):
                try:
                    got.append((n, i, (await proc.call("svc", "x", [n, i])).body))
                except CallAborted as exc:
                    got.append((n, i, type(exc).__name__))
                await trio.sleep(1)

        with trio.fail_after(30):
            a = kernel.spawn(client, 0, caps={"svc": Grant(ep, "w")})
            b = kernel.spawn(client, 1, caps={"svc": Grant(ep, "w")})
            assert (await kernel.wait(a)).state == "exited"
            assert (await kernel.wait(b)).state == "exited"
        # every answer the clients got is the one for their own call
        assert sorted(g for g in got if isinstance(g[2], list)) == \
            sorted(g for g in got if isinstance(g[2], list) and g[2] == [g[0], g[1]])
        assert refused_to_block(seen), [s for s in seen if not isinstance(s, IPCError)]
        assert kernel._domain(server).alive
    for item in seen:
        if isinstance(item, Coroutine):
            item.close()


# -- the kernel's fault path with a pager answering in place ----------------------------


class InPlacePager(Pager):
    """A pager whose ``evict`` and ``observe`` are immediate -- answered in place, on the
    kernel's fault path -- and run ``trick`` with its handle each time."""

    def __init__(self, proc: Process, trick: Trick, seen: list[Any]) -> None:
        super().__init__(proc, make_policy("clock"))
        self.trick, self.seen = in_place(trick, [current_task()]), seen

    def handlers(self) -> serverloop.Table:
        table = dict(super().handlers())

        def evict(body: Any) -> Any:
            self.trick(self.proc, self.seen)
            coro = self.on_evict(body)  # no await inside: it finishes at its first step
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            raise AssertionError("on_evict waited")

        table["evict"] = serverloop.immediate(evict)
        table["observe"] = serverloop.immediate(self.observe)
        return table


def in_place_pager(trick: Trick, seen: list[Any]) -> Callable[..., Any]:
    async def pager(proc: Process, policy: str = "clock") -> None:
        await InPlacePager(proc, trick, seen).serve()

    return pager


PAGES = 40


async def sweep(proc: Process) -> int:
    """Write then check ``PAGES`` pages twice through few frames: 0 if all read right, 2
    on a typed fault, 1 on wrong data."""
    base = proc.mmap(PAGES * 4096)
    try:
        for rnd in range(2):
            for i in range(PAGES):
                await proc.write(base + i * 4096, bytes([rnd + 1, i]) * 8)
            for i in range(PAGES):
                if await proc.read(base + i * 4096, 16) != bytes([rnd + 1, i]) * 8:
                    return 1
    except CapkernError:
        return 2
    return 0


async def _paging_run(seen: list[Any], **options: Any) -> tuple[list[int | None], int]:
    async with capkern.boot(ram_pages=12, pager_deadline=1.0, **options) as kernel:
        with trio.fail_after(120):  # bounded time, whatever the servers do
            pids = [kernel.spawn(sweep, name=f"sweep{i}") for i in range(2)]
            codes = [(await kernel.wait(pid)).code for pid in pids]
            await trio.testing.wait_all_tasks_blocked()
            assert kernel.vm is not None  # every frame is back once its process ended
            assert kernel.vm.frames.free_count == kernel.config.ram_pages

            async def bystander(proc: Process) -> int:  # no paging involved
                ep = proc.new_endpoint("e")
                return int(proc.nbsend(ep, "hi"))

            assert (await kernel.wait(kernel.spawn(bystander))).code == 0
        in_place = kernel.stats.ipc_in_place
    for item in seen:
        if isinstance(item, Coroutine):
            item.close()
    return codes, in_place


@pytest.mark.parametrize("trick", HAND_DRIVEN, ids=lambda t: t.__name__)
async def test_a_pager_answering_in_place_cannot_park_the_fault_path(
        trick: Trick, capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []
    codes, answered = await _paging_run(seen, pager=in_place_pager(trick, seen))
    assert answered > 0
    assert 1 not in codes  # never wrong data
    assert refused_to_block(seen), [s for s in seen if not isinstance(s, IPCError)]
    assert codes == [0, 0]  # the pager caught its refusals and kept paging


@pytest.mark.parametrize("trick", ENDING, ids=lambda t: t.__name__)
@pytest.mark.parametrize("where", ["pager", "blockdev_server"])
async def test_a_server_ended_by_its_answer_in_place_costs_typed_faults_only(
        trick: Trick, where: str, capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []
    server = in_place_pager(trick, seen) if where == "pager" else trick_disk(trick, seen)
    codes, _answered = await _paging_run(seen, **{where: server})
    assert seen  # the trick ran in place
    assert set(codes) <= {0, 2}  # data right, or a typed fault: never wrong data


class TrickDisk(MemoryBackend):
    """A memory disk (its read/write answered in place, on the pager's task) that runs
    ``trick`` with its handle at every read and write."""

    def __init__(self, nblocks: int, proc: Process, trick: Trick, seen: list[Any]) -> None:
        super().__init__(nblocks)
        self.proc, self.trick, self.seen = proc, in_place(trick, [current_task()]), seen

    def read_many(self, lbas: Any) -> list[bytes]:
        self.trick(self.proc, self.seen)
        return super().read_many(lbas)

    def write_many(self, blocks: Any) -> None:
        self.trick(self.proc, self.seen)
        super().write_many(blocks)


def trick_disk(trick: Trick, seen: list[Any]) -> Callable[..., Any]:
    async def disk(proc: Process, spec: str, nblocks: int, latency: float = 0.0) -> None:
        await serve_backend(proc, TrickDisk(nblocks, proc, trick, seen), latency)

    return disk


@pytest.mark.parametrize("trick", HAND_DRIVEN, ids=lambda t: t.__name__)
async def test_a_disk_answering_in_place_cannot_park_its_pagers_task(
        trick: Trick, capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []
    codes, answered = await _paging_run(seen, blockdev_server=trick_disk(trick, seen))
    assert answered > 0
    assert 1 not in codes
    assert refused_to_block(seen), [s for s in seen if not isinstance(s, IPCError)]


# -- results whose encoding runs the server's code --------------------------------------


class Sneaky(dict[str, Any]):
    """A reply body whose ``items`` (called by the encoder, at the caller's trap) runs
    the server's code."""

    hook: Callable[[], None] = staticmethod(lambda: None)

    def items(self) -> Any:
        type(self).hook()
        return super().items()


async def test_an_answers_result_cannot_park_the_caller_while_it_is_encoded(
        capkern_clock: trio.testing.MockClock) -> None:
    seen: list[Any] = []
    async with capkern.boot(paging=False) as kernel:
        # a closed reply schema: the kernel encodes the result without walking it first
        ep = kernel.new_endpoint("svc", Contract("n", {"x": Op(Int(), Struct({"n": Int()}))}))

        async def server(proc: Process) -> None:
            here = in_place(hand_recv, [current_task()])

            class Hook(Sneaky):
                hook = staticmethod(lambda: here(proc, seen))

            offer = proc.offer(["x"], lambda label, body: ("ok", Hook(n=body)))
            while True:
                msg = await proc.recv("service", offer=offer)
                proc.reply("ok", ["handed", msg.body])

        kernel.spawn(server, kind="server", caps={"service": Grant(ep, "r")})
        await trio.testing.wait_all_tasks_blocked()
        got: list[Any] = []

        async def client(proc: Process, n: int) -> None:
            for i in range(3):
                try:
                    got.append((n * 10 + i, (await proc.call("svc", "x", n * 10 + i)).body))
                except ReplyRefused:
                    got.append((n * 10 + i, "refused"))
                await trio.sleep(1)

        with trio.fail_after(30):
            for pid in [kernel.spawn(client, n, caps={"svc": Grant(ep, "w")})
                        for n in range(2)]:
                assert (await kernel.wait(pid)).state == "exited"
        # each caller gets its own answer, as a plain dict (or the loop's, handed over)
        assert len(got) == 6
        assert all(reply in ({"n": request}, ["handed", request]) and type(reply) in (dict, list)
                   for request, reply in got), got
        assert refused_to_block(seen), [s for s in seen if not isinstance(s, IPCError)]
    for item in seen:
        if isinstance(item, Coroutine):
            item.close()


# -- an offer changed after it was made ---------------------------------------------------


class Trap:
    """A label collection whose membership test runs code."""

    def __contains__(self, label: object) -> bool:
        raise RuntimeError("the server's code ran inside the caller's lookup")

    def __iter__(self) -> Iterator[str]:
        return iter(["x"])


@pytest.mark.parametrize("field", ["labels", "answer", "on_refused"])
async def test_an_offer_cannot_be_changed_after_it_was_made(
        bare_kernel: Kernel, field: str) -> None:
    tried: list[Any] = []

    async def server(proc: Process) -> None:
        offer = proc.offer(["x"], lambda label, body: ("ok", body))
        try:
            setattr(offer, field, Trap() if field == "labels" else print)
        except AttributeError as exc:
            tried.append(exc)
        while True:
            msg = await proc.recv("service", offer=offer)
            proc.reply("ok", msg.body)

    ep, _ = await start_server(bare_kernel, server)

    async def client(proc: Process) -> int:
        return int((await proc.call("svc", "x", 5)).body)

    assert (await bare_kernel.wait(bare_kernel.spawn(
        client, caps={"svc": Grant(ep, "w")}))).code == 5
    assert len(tried) == 1 and bare_kernel.stats.ipc_in_place == 1


# -- what held: raising, values, own capabilities ------------------------------------------


class Weird(BaseException):
    pass


@pytest.mark.parametrize("exc", [Weird("boom"), SystemExit(3), GeneratorExit(),
                                 StopIteration(), RecursionError()])
async def test_an_answer_raising_a_base_exception_ends_only_the_server(
        bare_kernel: Kernel, exc: BaseException) -> None:
    def answer(label: str, body: Any) -> tuple[str, Any]:
        raise exc

    async def server(proc: Process) -> None:
        offer = proc.offer(["x"], answer)
        await proc.recv("service", offer=offer)

    ep, pid = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        try:
            await proc.call("svc", "x", 1)
        except CallAborted as err:
            got.append(err)

    assert (await bare_kernel.wait(bare_kernel.spawn(
        client, caps={"svc": Grant(ep, "w")}))).state == "exited"
    status = await bare_kernel.wait(pid)
    assert len(got) == 1
    if isinstance(exc, SystemExit):
        assert (status.state, status.code) == ("exited", 3)
    elif isinstance(exc, RecursionError):  # handed to its own stack (see the deep caller)
        assert (status.state, status.code) == ("exited", 0)  # it returned from its recv
    else:
        assert status.state == "failed"


class MyInt(int):
    def __index__(self) -> int:
        raise RuntimeError("ran")

    def __int__(self) -> int:
        raise RuntimeError("ran")


class Text(str):
    def __str__(self) -> str:
        raise RuntimeError("ran")

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("ran")


def _deep(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("result", [
    MyInt(3), Text("abc"), {"k": MyInt(1)}, [Text("a")], 1 << 70, _deep(5000),
    b"x" * (2 << 20), {Text("k"): 1}, {(1, 2): 3},
], ids=["int-sub", "str-sub", "dict-int-sub", "list-str-sub", "huge-int", "deep",
        "oversized", "str-sub-key", "tuple-key"])
async def test_odd_results_cross_as_plain_values_or_are_refused(
        bare_kernel: Kernel, result: Any) -> None:
    kept: list[Any] = []

    def answer(label: str, body: Any) -> tuple[str, Any]:
        kept.append(body)
        return "ok", result

    async def server(proc: Process) -> None:
        offer = proc.offer(["x"], answer)
        while True:
            await proc.recv("service", offer=offer)

    ep, pid = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        body = {"v": [1]}
        try:
            reply = (await proc.call("svc", "x", body)).body
            got.append(reply)
        except ReplyRefused:
            got.append("refused")
        kept[0]["v"].append(2)  # the server's copy changes: the caller's does not
        got.append(body)

    assert (await bare_kernel.wait(bare_kernel.spawn(
        client, caps={"svc": Grant(ep, "w")}))).state == "exited"
    reply = got[0]
    if reply != "refused":  # crossed: plain values, equal to what was meant
        assert type(reply) in (int, str, dict, list)
        assert type(reply) is not type(result) or type(result) in (int, dict, list)
    assert got[1] == {"v": [1]}
    assert bare_kernel._domain(pid).alive


def _end_own_receive(proc: Process, mode: str, me: int, body: Any) -> None:
    """Inside an answer: end the receive it answers for -- delete the receive capability,
    or send the server a message its own receive takes."""
    if mode == "delete":
        proc.delete("service")
    else:
        proc.nbsend(me, "note", body)


async def test_an_answer_deleting_or_feeding_its_own_receive(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    """Deleting its receive capability inside the answer: the answer still counts (the
    server was waiting when called), the server ends by the revocation.  Sending to
    itself without blocking: its own receive takes the message."""
    handed: list[Any] = []

    async def server(proc: Process, mode: str) -> None:
        me = proc.copy("service", "w", "me")

        def answer(label: str, body: Any) -> tuple[str, Any]:
            _end_own_receive(proc, mode, me, body)
            return "ok", body

        offer = proc.offer(["x"], answer)
        while True:
            msg = await proc.recv("service", offer=offer)
            handed.append((mode, msg.label, msg.body))

    got: list[Any] = []

    async def client(proc: Process) -> None:
        got.append((await proc.call("svc", "x", 4)).body)

    for mode in ("delete", "nbsend"):
        ep, pid = await start_server(bare_kernel, partial(server, mode=mode), rights="rw")
        await bare_kernel.wait(bare_kernel.spawn(client, caps={"svc": Grant(ep, "w")}))
        await trio.testing.wait_all_tasks_blocked()
        if mode == "delete":
            status = await bare_kernel.wait(pid)
            assert status.state == "failed" and "CapabilityRevoked" in (status.error or "")
        else:
            assert bare_kernel._domain(pid).alive
    assert got == [4, 4]
    assert handed == [("nbsend", "note", 4)]


async def test_a_process_answering_in_place_cannot_fault_on_its_callers_task(
        capkern_clock: trio.testing.MockClock) -> None:
    """A server with an address space (a process) touching its memory inside an answer:
    a fault would wait for the pager on the caller's task -- refused; read from its own
    task the memory is intact."""
    seen: list[Any] = []
    async with capkern.boot(ram_pages=12) as kernel:
        ep = kernel.new_endpoint("svc")

        async def server(proc: Process) -> None:
            base = proc.mmap(30 * 4096)
            for i in range(30):  # more than fits: some are swapped out
                await proc.write(base + i * 4096, bytes([i + 1]))

            def touch(p: Process, s: list[Any]) -> None:
                for i in range(30):
                    try:  # refused when called, or when driven
                        drive(p.read(base + i * 4096, 1), s)
                    except CapkernError as exc:
                        s.append(exc)

            here = in_place(touch, [current_task()])

            def answer(label: str, body: Any) -> tuple[str, Any]:
                here(proc, seen)
                return "ok", body

            offer = proc.offer(["x"], answer)
            with trio.move_on_after(10):
                while True:
                    await proc.recv("service", offer=offer)
            for i in range(30):
                assert await proc.read(base + i * 4096, 1) == bytes([i + 1])

        pid = kernel.spawn(server, caps={"service": Grant(ep, "r")})
        await trio.sleep(1)

        async def client(proc: Process) -> int:
            total = 0
            for i in range(3):
                total += (await proc.call("svc", "x", i)).body
            return total

        with trio.fail_after(60):
            assert (await kernel.wait(kernel.spawn(
                client, caps={"svc": Grant(ep, "w")}))).code == 3
            assert (await kernel.wait(pid)).state == "exited"
    assert len(seen) == 90  # three answers in place, 30 touches each
    assert refused_to_block(seen), [s for s in seen if not isinstance(s, IPCError)]
    for item in seen:
        if isinstance(item, Coroutine):
            item.close()


async def test_a_bug_after_the_answer_ended_its_own_receive_is_a_typed_error(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    """An answer that first ends the receive it answers for (a message to itself takes
    it, or it deletes its capability), then raises: the caller gets a typed error
    naming the raise, the server's task gets what ended its receive, nothing else."""
    handed: list[Any] = []
    got: list[Any] = []

    async def server(proc: Process, mode: str) -> None:
        me = proc.copy("service", "w", "me")

        def answer(label: str, body: Any) -> tuple[str, Any]:
            _end_own_receive(proc, mode, me, body)
            raise Bug("after its receive ended")

        offer = proc.offer(["x"], answer)
        msg = await proc.recv("service", offer=offer)
        handed.append((mode, msg.label, msg.body))

    async def client(proc: Process) -> None:
        try:
            await proc.call("svc", "x", 4)
        except ReplyRefused as exc:
            got.append("Bug" in str(exc))

    for mode in ("delete", "nbsend"):
        ep, pid = await start_server(bare_kernel, partial(server, mode=mode), rights="rw")
        await bare_kernel.wait(bare_kernel.spawn(client, caps={"svc": Grant(ep, "w")}))
        status = await bare_kernel.wait(pid)
        assert status.state == ("failed" if mode == "delete" else "exited")
    assert got == [True, True]
    assert handed == [("nbsend", "note", 4)]


def _nested(n: int, body: Any) -> Any:
    return _nested(n - 1, body) if n else {"v": body}


@pytest.mark.parametrize("loop", ["offer", "serve"])
async def test_a_caller_on_a_deep_stack_cannot_end_the_server(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock, loop: str) -> None:
    """The answer runs on the caller's stack: a caller that calls from near the
    recursion limit makes it raise RecursionError there -- the caller's doing, not the
    server's bug.  The server must not end for it (every other client would lose it),
    nor answer with an error its own stack would not have met (a server loop mapping
    every exception to a typed error, as the block device does)."""

    async def server(proc: Process) -> None:
        if loop == "serve":
            await serverloop.serve(proc, {"x": serverloop.immediate(lambda b: _nested(30, b))},
                                   errors=((Exception, "io"),))
        offer = proc.offer(["x"], lambda label, body: ("ok", _nested(30, body)))
        while True:
            msg = await proc.recv("service", offer=offer)
            proc.reply("ok", _nested(30, msg.body))

    ep, pid = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        async def deep(n: int, i: int) -> Any:
            if n > 0:
                return await deep(n - 1, i)
            with trio.fail_after(5):
                return (await proc.call("svc", "x", i)).body

        limit = sys.getrecursionlimit()
        for i, depth in enumerate(range(limit - 120, limit)):
            try:
                got.append((i, await deep(depth, i)))
            except RecursionError:  # its own stack ran out: its own business
                got.append((i, "own"))

    status = await bare_kernel.wait(bare_kernel.spawn(client, caps={"svc": Grant(ep, "w")}))
    assert status.state == "exited", status
    assert all(reply in ({"v": i}, "own") for i, reply in got), got
    assert bare_kernel._domain(pid).alive


async def test_an_answer_runs_in_its_servers_context_not_its_callers(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    """Context variables (``decimal``'s arithmetic context is one) are the server's in
    its answer, as on its own task: a caller's setting does not reach the server's
    computation, and the server's setting does not reach the caller."""
    theirs: list[Any] = []

    def answer(label: str, body: Any) -> tuple[str, Any]:
        theirs.append(decimal.getcontext().prec)
        result = str(decimal.Decimal(1) / decimal.Decimal(7))
        decimal.getcontext().prec = 2  # the server's own business
        return "ok", result

    async def server(proc: Process) -> None:
        decimal.setcontext(decimal.Context(prec=12))  # its own, set on its own task
        offer = proc.offer(["x"], answer)
        while True:
            msg = await proc.recv("service", offer=offer)
            proc.reply("ok", msg.body)

    ep, _ = await start_server(bare_kernel, server)
    got: list[Any] = []

    async def client(proc: Process) -> None:
        decimal.setcontext(decimal.Context(prec=5))
        for _ in range(2):
            got.append((await proc.call("svc", "x", None)).body)
        got.append(decimal.getcontext().prec)

    assert (await bare_kernel.wait(bare_kernel.spawn(
        client, caps={"svc": Grant(ep, "w")}))).state == "exited"
    assert bare_kernel.stats.ipc_in_place == 2
    assert theirs == [12, 2]  # the server's own context, kept from one answer to the next
    assert got == ["0.142857142857", "0.14", 5]


SYNC_OPS: list[tuple[str, Callable[[Process], Any]]] = [
    ("reply", lambda p: p.reply("ok", 1)),
    ("reply_error", lambda p: p.reply_error("io", "x")),
    ("save_caller", lambda p: p.save_caller("saved")),
    ("reply_to", lambda p: p.reply_to("service", "ok", 1)),
    ("reply_recv", lambda p: p.reply_recv("service", "ok", 1)),
    ("nbsend_self", lambda p: p.nbsend(p.copy("service", "w"), "y", 1)),
    ("signal", lambda p: p.signal(p.new_notification())),
    ("new_endpoint", lambda p: p.new_endpoint("more")),
    ("mint", lambda p: p.mint("service", "r", 7)),
    ("mmap", lambda p: p.mmap(4096)),
]


async def test_an_answers_syscalls_are_its_own_or_refused(
        bare_kernel: Kernel, capkern_clock: trio.testing.MockClock) -> None:
    """The rest of a server's handle inside an answer: there is no caller to reply to
    (the answer is the reply), nothing blocks, and what it changes is its own."""
    outcomes: dict[str, Any] = {}

    async def server(proc: Process) -> None:
        def answer(label: str, body: Any) -> tuple[str, Any]:
            name, op = SYNC_OPS[body]
            try:
                result = op(proc)
                if isinstance(result, Coroutine):
                    steps: list[Any] = []
                    drive(result, steps)
                    result = steps[0]
                outcomes[name] = result
            except CapkernError as exc:
                outcomes[name] = exc
            return "ok", body

        offer = proc.offer(["x"], answer)
        while True:
            msg = await proc.recv("service", offer=offer)
            if msg.label == "x":  # (not the message it sent itself)
                proc.reply("ok", ["handed", msg.body])

    ep, pid = await start_server(bare_kernel, server, rights="rw")
    got: list[Any] = []

    async def client(proc: Process) -> None:
        with trio.fail_after(30):
            for i in range(len(SYNC_OPS)):
                got.append((await proc.call("svc", "x", i)).body)

    assert (await bare_kernel.wait(bare_kernel.spawn(
        client, caps={"svc": Grant(ep, "w")}))).state == "exited"
    # every call was answered by its answer, in place, except the one whose message to
    # itself took its receive (the next call then found it busy, and was handed over)
    assert got == [0, 1, 2, 3, 4, 5, ["handed", 6], 7, 8, 9]
    assert bare_kernel._domain(pid).alive
    for name in ("reply", "reply_error", "save_caller", "reply_to"):
        assert isinstance(outcomes[name], CapkernError), (name, outcomes[name])
    assert isinstance(outcomes["reply_recv"], IPCError)  # its receive: refused
    assert isinstance(outcomes["new_endpoint"], int) and isinstance(outcomes["mint"], int)
