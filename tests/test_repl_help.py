"""The REPL's help and manners: ``spawn?``/``help(spawn)``, the unawaited-coroutine hint,
short tracebacks, ``kernel``'s repr, ``caps()`` with object names, names for pids,
``reboot(pager=...)`` reporting the real policy and ``capkern repl --pager``."""

from __future__ import annotations

import inspect
import io
from typing import Any

import trio

import capkern
from capkern import _repl as repl
from capkern import _replhelp as replhelp
from capkern import programs
from capkern._proc import Process
from capkern.servers.pager import FIFOPolicy, make_pager
from tests.helpers import run_repl


class MRUPolicy(FIFOPolicy):
    """A policy for ``--pager tests.test_repl_help:MRUPolicy``: evicts the newest page."""

    name = "mru-test"

    def choose(self, n: int) -> list[int]:
        return list(reversed(list(super().choose(len(self)))))[:n]


def test_help_topics_and_hints_through_the_real_prompt() -> None:
    out = run_repl("\n".join([
        "spawn?",
        "help(caps)",
        "help()",
        "wait(1)",
        "kernel",
        "caps('pager')",
        "kill('nobody')",
        "await kernel.wait('pager')",
        "fulltb()",
        'print("still", len(kernel.domains()))',
        "",
    ]))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "spawn(prog, *args, name=None, caps=None)" in text
    assert "Start a program in a new protection domain" in text
    assert "caps(pid=0)" in text and "objects they name" in text
    assert "reboot()" in text and "fulltb()" in text  # help() lists the functions
    assert "<coroutine wait(...)> -- not run: it is async, so write `await wait(...)`" in text
    assert "<coroutine object" not in text
    assert "<Kernel up" in text and "64/64 frames free, clock, 0 faults>" in text
    assert "Endpoint#3 'pager'" in text and "Endpoint#2 'blockdev'" in text
    assert "NoSuchProcess: no live domain named 'nobody'" in out.stderr
    # the short traceback shows the statement, not the kernel's frames ...
    short = out.stderr.split("no live domain named 'nobody'")[1]
    assert 'File "<console>"' in short and "kernel.py" not in short
    assert "a pid is an int (kernel.pid_of(name)" in short
    # ... and fulltb() shows them all
    assert "kernel.py" in text and "in _domain" in text
    assert "still 3" in text
    assert "RuntimeWarning" not in out.stderr  # the unawaited coroutine was closed
    for line in text.split("Traceback")[0].splitlines():  # help, hints, repr, tables
        assert len(line) <= 80, line


def test_unawaited_hint_closes_the_coroutine() -> None:
    async def sleepy() -> None:
        await trio.sleep(1)

    coro = sleepy()
    hint = replhelp.unawaited_hint(coro)
    assert hint is not None and "await sleepy(...)" in hint
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # never runs, never warns
    assert replhelp.unawaited_hint(42) is None and replhelp.unawaited_hint("x") is None


async def test_short_traceback_drops_kernel_and_trio_frames() -> None:
    async with capkern.boot(paging=False) as k:
        try:
            await k.wait("x")  # type: ignore[arg-type]
        except capkern.NoSuchProcess as exc:
            text = replhelp.short_traceback(exc)
    assert "test_repl_help.py" in text and "kernel.py" not in text
    assert text.rstrip().endswith("finds a live domain by name)")
    group = ExceptionGroup("two", [ValueError("a"), KeyError("b")])
    assert "ValueError: a" in replhelp.short_traceback(group)
    assert "KeyError: 'b'" in replhelp.short_traceback(group)


def test_describe_shows_signature_without_annotations() -> None:
    text = replhelp.describe(programs.sequential)
    assert text.startswith("async sequential(proc, pages=64, rounds=2, seed=1)")
    assert "'int'" not in text and "Sweep a working set" in text
    assert "Help on" in replhelp.describe(capkern.Kernel)  # everything else: pydoc, no pager


async def test_kernel_repr_says_what_is_running() -> None:
    async with capkern.boot(ram_pages=8, policy="fifo") as k:
        await k.wait(k.spawn(programs.sequential, 12, 1))
        text = repr(k)
        assert "3 of 4 domains live" in text and "fifo" in text
        assert "8/8 frames free" in text and f"{k.stats.faults} faults>" in text
    async with capkern.boot(paging=False) as k:
        assert "paging off" in repr(k)
    assert "shut down" in repr(k)


async def test_caps_kill_and_wait_take_names(capkern_clock: Any) -> None:
    async def idle(proc: Process) -> None:
        await trio.sleep_forever()

    out = io.StringIO()
    host = repl._Host({"ram_pages": 8})
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        ns = repl._namespace(host, out)
        ep = ns["kernel"].new_endpoint("svc")
        ns["spawn"](idle, name="idler", caps={"svc": capkern.Grant(ep, "w", badge=7)})
        ns["caps"]("idler")
        row = out.getvalue().splitlines()[-1].split()
        assert row[:3] == ["1", "svc", "Endpoint#" + str(int(row[2].split("#")[1]))]
        assert "'svc'" in row and "-w-" in row and "7" in row and f"0:{ep.slot}" in row
        ns["kill"]("idler")
        status = await ns["wait"](4)
        assert status.state == "killed"
        nursery.cancel_scope.cancel()


async def test_reboot_reports_the_policy_the_pager_runs() -> None:
    host = repl._Host({"ram_pages": 8})
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        ns = repl._namespace(host, io.StringIO())
        said = await ns["reboot"](pager=make_pager(MRUPolicy))
        assert said == "rebooted with ram_pages=8 policy=mru-test"
        said = await ns["reboot"](pager=None, policy="lru")
        assert said == "rebooted with ram_pages=8 policy=lru"
        nursery.cancel_scope.cancel()


def test_repl_pager_option_runs_a_policy_class() -> None:
    out = run_repl("print((await server_stats())['pager']['policy'])\n",
                   "--pager", "tests.test_repl_help:MRUPolicy")
    assert out.returncode == 0, out.stderr
    assert "mru-test" in out.stdout
    bad = run_repl("", "--pager", "tests.test_repl_help:run_repl")
    assert bad.returncode == 2 and "is not a ReplacementPolicy subclass" in bad.stderr
    bad = run_repl("", "--pager", "no_such_module_here:X")
    assert bad.returncode == 2 and "No module named" in bad.stderr
