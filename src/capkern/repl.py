"""``capkern repl``: a booted kernel in the background and a Python prompt with
top-level ``await``.

The prompt runs in a worker thread (``code.InteractiveConsole``); each statement is
compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and handed back to the Trio loop with
``trio.from_thread.run``, inside a cancel scope: Ctrl-C cancels the running statement,
not the kernel.  Ctrl-D (or ``exit()``) shuts the kernel down cleanly.  Piped stdin works
too, so sessions are scriptable.
"""

from __future__ import annotations

import ast
import code
import inspect
import signal
import sys
import types
from typing import Any

import trio

from . import programs
from .kernel import Grant, Kernel, boot

__all__ = ["run_repl"]

BANNER = """capkern repl -- a kernel is booted; top-level await works.
  spawn(prog, *args, name=, caps=)  prog: a function or one of {progs}
  ps()  caps(pid)  kill(pid)  await wait(pid)  stats()  await server_stats()
  events(n=10)  watch()  reboot(ram_pages=.., policy=.., cipher=..)  kernel  programs
Ctrl-C cancels the running statement; Ctrl-D quits."""


class _Host:
    """Owns the booted kernel; reboots it on request."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.kernel: Kernel | None = None
        self._reboot = trio.Event()
        self._up = trio.Event()

    async def run(self) -> None:
        while True:
            async with boot(**self.options) as kernel:
                self.kernel = kernel
                self._up.set()
                await self._reboot.wait()
            self._reboot = trio.Event()

    async def reboot(self, **options: Any) -> Kernel:
        self.options = {**self.options, **options}
        self._up = trio.Event()
        self._reboot.set()
        await self._up.wait()
        assert self.kernel is not None
        return self.kernel


def _namespace(host: _Host, out: Any) -> dict[str, Any]:
    def k() -> Kernel:
        assert host.kernel is not None
        return host.kernel

    def spawn(prog: Any, *args: Any, name: str | None = None,
              caps: dict[str, Any] | None = None) -> int:
        if isinstance(prog, str):
            prog = getattr(programs, prog)
        return k().spawn(prog, *args, name=name, caps=caps)

    def ps() -> None:
        print(f"{'pid':>4} {'name':<14} {'kind':<8} {'state':<8} {'res':>4} {'swap':>5} "
              f"{'faults':>6} {'integ':>5}", file=out)
        for d in k().domains():
            print(f"{d.pid:>4} {d.name:<14} {d.kind:<8} {d.state:<8} {d.resident_pages:>4} "
                  f"{d.swapped_pages:>5} {d.faults:>6} {d.integrity_faults:>5}", file=out)

    def caps(pid: int) -> None:
        print(f"{'slot':>4} {'name':<10} {'kind':<13} {'rights':<6} {'badge':>6} parent",
              file=out)
        for c in k().capabilities(pid):
            print(f"{c.slot:>4} {c.name:<10} {c.kind:<13} {c.rights:<6} {c.badge:>6} "
                  f"{c.parent}", file=out)

    def stats() -> dict[str, int]:
        return {n: v for n, v in k().stats.as_dict().items() if v}

    async def server_stats() -> dict[str, Any]:
        vm = k().vm
        return {} if vm is None else dict(await vm.server_stats())

    def events(n: int = 10) -> None:
        for e in list(k().events.events)[-n:]:
            print(f"{e.time:10.3f} {e.kind:<16} pid={e.pid:<3} {e.domain:<12} {e.detail}",
                  file=out)

    watching: list[Any] = []

    def watch() -> str:
        if watching:
            k().events.unsubscribe(watching.pop())
            return "stopped watching"

        def show(e: Any) -> None:
            print(f"\n[{e.kind}] pid={e.pid} {e.domain} {e.detail}", file=out)

        k().events.subscribe(show)
        watching.append(show)
        return "watching kernel events (call watch() again to stop)"

    async def wait(pid: int) -> Any:
        return await k().wait(pid)

    async def reboot(**options: Any) -> str:
        kernel = await host.reboot(**options)
        ns["kernel"] = kernel
        return f"rebooted with ram_pages={kernel.config.ram_pages} policy={kernel.config.policy}"

    ns: dict[str, Any] = {
        "kernel": host.kernel, "programs": programs, "trio": trio, "Grant": Grant,
        "spawn": spawn, "ps": ps, "caps": caps, "kill": lambda pid: k().kill(pid),
        "wait": wait, "stats": stats, "server_stats": server_stats, "events": events,
        "watch": watch, "reboot": reboot, "__name__": "__capkern_repl__",
    }
    return ns


class _Console(code.InteractiveConsole):
    """Runs each compiled statement on the Trio loop, async or not."""

    def __init__(self, ns: dict[str, Any], scopes: list[trio.CancelScope]) -> None:
        super().__init__(ns)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._scopes = scopes

    def runcode(self, codeobj: types.CodeType) -> None:
        async def run() -> Any:
            with trio.CancelScope() as scope:
                self._scopes.append(scope)
                try:
                    func = types.FunctionType(codeobj, self.locals)
                    result = func()
                    if inspect.iscoroutine(result):
                        await result
                except SystemExit:
                    raise
                except BaseException:
                    self.showtraceback()
                finally:
                    self._scopes.remove(scope)
            if scope.cancelled_caught:
                print("(statement cancelled)", file=sys.stderr)

        trio.from_thread.run(run)


async def _main(options: dict[str, Any]) -> None:
    host = _Host(options)
    scopes: list[trio.CancelScope] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.run)
        await host._up.wait()
        ns = _namespace(host, sys.stdout)
        console = _Console(ns, scopes)
        if sys.stdin.isatty():
            try:
                import readline
                import rlcompleter

                readline.set_completer(rlcompleter.Completer(ns).complete)
                readline.parse_and_bind("tab: complete")
            except ImportError:
                pass

        async def on_sigint() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    if scopes:
                        scopes[-1].cancel()
                    else:
                        print("\nKeyboardInterrupt (Ctrl-D quits)", file=sys.stderr)

        nursery.start_soon(on_sigint)
        banner = BANNER.format(progs=", ".join(p for p in programs.__all__ if p != "page_pattern"))
        try:
            await trio.to_thread.run_sync(
                lambda: console.interact(banner=banner, exitmsg="shutting down"),
                abandon_on_cancel=True)
        except SystemExit:
            pass
        nursery.cancel_scope.cancel()


def run_repl(**options: Any) -> int:
    trio.run(_main, options)
    return 0
