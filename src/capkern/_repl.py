"""``capkern repl``: a booted kernel in the background and a Python prompt with
top-level ``await``.

The kernel runs under ``trio.run`` in a background thread; the prompt
(``code.InteractiveConsole``, with readline history and tab completion on a terminal)
runs in the main thread, so Ctrl-C behaves as at any Python prompt: at the prompt it
discards the line being typed; while a statement runs it cancels that statement (each is
compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run as a task on the Trio loop inside
its own cancel scope), never the kernel or its processes.  Ctrl-D (or ``exit()``) shuts
the kernel down cleanly.  Piped stdin works too, so sessions are scriptable.
"""

from __future__ import annotations

import ast
import code
import inspect
import signal
import sys
import textwrap
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

import trio

from . import programs
from ._config import Grant
from ._replhelp import HELP_TOPIC, describe, displayhook, running_policy, short_traceback
from ._root import boot
from .errors import ConfigError
from .kernel import Kernel

__all__ = ["run_repl"]


def _program_list() -> str:
    """The built-in programs' names, wrapped to fit the banner in 80 columns."""
    return textwrap.fill(", ".join(programs.PROGRAMS), 72, subsequent_indent="      ")


BANNER = """capkern repl -- a kernel is booted; top-level await works.
  spawn(prog, *args, name=, caps=)   prog: an async function, or one of
      {progs}
  ps()  caps(pid)  kill(pid)  await wait(pid)  stats()  await server_stats()
  events(n=10)  watch()  await reboot(ram_pages=.., policy=.., pager=..)  kernel
help() lists these; spawn? or help(spawn) explains one.  Ctrl-C cancels the
running statement; Ctrl-D quits."""

class _Host:
    """Owns the booted kernel; reboots it on request.

    A reboot whose options are rejected leaves the running kernel untouched; one that
    fails while booting falls back to the last options that booted.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.kernel: Kernel | None = None
        self._reboot = trio.Event()
        self._up = trio.Event()
        self._failure: BaseException | None = None
        self.on_up: Callable[[Kernel], None] = lambda kernel: None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        good: dict[str, Any] | None = None
        started = False
        while True:
            came_up = False
            try:
                async with boot(**self.options) as kernel:
                    came_up = True
                    good = self.options
                    self.kernel = kernel
                    self.on_up(kernel)
                    if not started:
                        started = True
                        task_status.started()
                    self._up.set()
                    await self._reboot.wait()
                    self._reboot = trio.Event()
            except Exception as exc:
                if came_up or good is None:
                    raise  # the kernel crashed, or the very first boot failed
                self._failure = exc
                self.options = good

    async def reboot(self, **options: Any) -> Kernel:
        from ._root import check_boot_options

        new = {**self.options, **options}
        try:
            check_boot_options(**new)  # a rejected reboot keeps the running kernel
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the kernel was not rebooted)") from None
        self.options = new
        self._failure = None
        self._up = trio.Event()
        self._reboot.set()
        await self._up.wait()
        assert self.kernel is not None
        if self._failure is not None:
            raise ConfigError(f"reboot failed ({self._failure}); booted again with the "
                              f"previous options") from self._failure
        return self.kernel


def _namespace(host: _Host, out: Any) -> dict[str, Any]:
    def k() -> Kernel:
        assert host.kernel is not None
        return host.kernel

    def spawn(prog: Any, *args: Any, name: str | None = None,
              caps: dict[str, Any] | None = None) -> int:
        """Start a program in a new protection domain; returns its pid.

        prog  an ``async def main(proc, *args)`` function, or a built-in
              program's name (programs.PROGRAMS: "sequential", "zipf"...)
        args  the program's arguments: checked against its signature now,
              they cross into the domain as msgpack copies
        name  the domain's name (default: the function's name)
        caps  {slot name: capability}: a root capability (kernel.new_endpoint(),
              kernel.mint()) or Grant(cap, rights="w", badge=7)

        Examples:
            pid = spawn("sequential", 32, 2)        # 32 pages, 2 rounds
            await wait(pid)
            ep = kernel.new_endpoint("echo")
            spawn("echo_server", caps={"service": Grant(ep, "r")})
            spawn("echo_client", 5, caps={"server": Grant(ep, "w", badge=1)})
        """
        if isinstance(prog, str):
            if prog not in programs.PROGRAMS:
                raise ValueError(f"unknown program {prog!r}; the built-in programs are "
                                 f"{', '.join(programs.PROGRAMS)}")
            prog = getattr(programs, prog)
        if not callable(prog) or ((inspect.isfunction(prog) or inspect.isbuiltin(prog))
                                  and not inspect.iscoroutinefunction(prog)):
            raise TypeError(f"a program must be an async function, not {prog!r}")
        programs.check_args(prog, *args)
        return k().spawn(prog, *args, name=name, caps=caps)

    def ps() -> None:
        """List the domains: pid, name, kind, state, resident/swapped pages, faults, and
        use against quota (slots, objects, blocked sends: used/limit), and where each runs
        (isolation mode, OS pid, restarts of its OS process)."""
        print(f"{'pid':>4} {'name':<14} {'kind':<8} {'state':<10} {'res':>4} {'swap':>5} "
              f"{'faults':>6} {'integ':>5} {'slots':>10} {'objects':>10} {'queued':>8} "
              f"{'isolation':<9} {'os_pid':>7} {'restarts':>8}", file=out)
        if k().insecure:
            print("INSECURE kernel: " + "; ".join(k().insecure), file=out)
        for d in k().domains():
            use = {r: f"{u}/{lim}" for r, (u, lim) in d.usage.items()}
            state = "quarantined" if d.quarantined else d.state
            print(f"{d.pid:>4} {d.name:<14} {d.kind:<8} {state:<10} {d.resident_pages:>4} "
                  f"{d.swapped_pages:>5} {d.faults:>6} {d.integrity_faults:>5} "
                  f"{use.get('slots', '-'):>10} {use.get('objects', '-'):>10} "
                  f"{use.get('queued', '-'):>8} {d.isolation:<9} {d.os_pid or '-':>7} "
                  f"{d.restarts:>8}", file=out)

    def pid_of(who: int | str) -> int:
        return k().pid_of(who) if isinstance(who, str) else who

    def caps(pid: int | str = 0) -> None:
        """Show a domain's capabilities and the objects they name.

        One row per slot: slot, slot name, the object (kind#id 'name'), rights,
        badge and the pid:slot it derives from.  ``pid`` may be a live domain's
        name; 0 (the default) is the kernel's root CSpace."""
        held = k().capabilities(pid_of(pid))
        print(f"{'slot':>4} {'name':<10} {'object':<28} {'rights':<6} {'badge':>6} parent",
              file=out)
        for c in held:
            obj = f"{c.kind}#{c.oid}" + (f" {c.object_name!r}" if c.object_name else "")
            if len(obj) > 28:
                obj = obj[:27] + "~"
            parent = "-" if c.parent is None else f"{c.parent[0]}:{c.parent[1]}"
            print(f"{c.slot:>4} {c.name[:10]:<10} {obj:<28} {c.rights:<6} {c.badge:>6} "
                  f"{parent}", file=out)

    def kill(pid: int | str) -> None:
        """Cancel a process (pid, or a live domain's name).

        Its resources are freed as it unwinds."""
        k().kill(pid_of(pid))

    def stats() -> dict[str, int]:
        """The kernel's nonzero counters."""
        return {n: v for n, v in k().stats.as_dict().items() if v}

    async def server_stats() -> dict[str, Any]:
        """The pager's, sealer's and block device's own statistics."""
        vm = k().vm
        return {} if vm is None else dict(await vm.server_stats())

    def events(n: int = 10) -> None:
        """The last ``n`` kernel events."""
        for e in list(k().events.events)[-n:]:
            print(f"{e.time:10.3f} {e.kind:<16} pid={e.pid:<3} {e.domain:<12} {e.detail}",
                  file=out)

    watching: list[Any] = []

    def watch() -> str:
        """Print kernel events as they happen (call again to stop)."""
        if watching:
            k().events.unsubscribe(watching.pop())
            return "stopped watching"

        def show(e: Any) -> None:
            print(f"\n[{e.kind}] pid={e.pid} {e.domain} {e.detail}", file=out)

        k().events.subscribe(show)
        watching.append(show)
        return "watching kernel events (call watch() again to stop)"

    async def wait(pid: int | str) -> Any:
        """Wait for a process (pid or name) to end; its exit status."""
        return await k().wait(pid_of(pid))

    async def reboot(**options: Any) -> str:
        """Boot again with changed options; reports the real policy.

        Options: ``ram_pages``, ``policy``, ``cipher``, ``pager=make_pager(MyPolicy)``...
        The policy reported is the one the running pager says it uses."""
        kernel = await host.reboot(**options)
        watching.clear()
        return f"rebooted with ram_pages={kernel.config.ram_pages} " \
               f"policy={await running_policy(kernel)}"

    last_error: list[BaseException] = []

    def fulltb() -> None:
        """The last error's full traceback, kernel frames included."""
        if not last_error:
            print("no error yet", file=out)
            return
        exc = last_error[0]
        print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
              file=out, end="")

    def help(obj: Any = None) -> None:
        """help() lists the REPL's functions; help(x) (or ``x?``) explains ``x``."""
        if obj is None:
            print(BANNER.format(progs=_program_list()), file=out)
            for fname in ("spawn", "ps", "caps", "kill", "wait", "stats", "server_stats",
                          "events", "watch", "reboot", "fulltb"):
                doc = (inspect.getdoc(ns[fname]) or "").splitlines()[0]
                doc = doc if len(doc) <= 62 else doc[:61] + "~"
                print(f"  {fname + '()':<15} {doc}", file=out)
            return
        print(describe(obj), file=out)

    ns: dict[str, Any] = {
        "kernel": host.kernel, "programs": programs, "trio": trio, "Grant": Grant,
        "spawn": spawn, "ps": ps, "caps": caps, "kill": kill,
        "wait": wait, "stats": stats, "server_stats": server_stats, "events": events,
        "watch": watch, "reboot": reboot, "help": help, "fulltb": fulltb,
        "__name__": "__capkern_repl__", "_last_error": last_error,
    }
    # ``kernel`` always names the running kernel, even after a reboot whose statement
    # was cancelled (Ctrl-C) or failed and fell back to the previous options.
    host.on_up = lambda kernel: ns.__setitem__("kernel", kernel)
    return ns


class _Loop:
    """``trio.run`` in a background thread: the host (kernel) and the statements."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.host = _Host(options)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self.thread = threading.Thread(target=self._thread, name="capkern-kernel",
                                       daemon=True)

    def _thread(self) -> None:
        # Ctrl-C must reach the prompt thread (it interrupts input() or the wait for a
        # statement): keep SIGINT off this thread and the worker threads it starts.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by the prompt thread
            self.error = exc
        finally:
            self.ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.host.run)
            self.ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def soon(self, fn: Any, *args: Any) -> bool:
        """Run ``fn(*args)`` on the Trio thread soon; False if the loop is gone."""
        if self.token is None:
            return False
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    def start_statement(self, fn: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn)

    def stop(self, timeout: float = 30.0) -> None:
        if self._stop is not None:
            self.soon(self._stop.set)
        self.thread.join(timeout)


class _Console(code.InteractiveConsole):
    """Sends each compiled statement to the Trio loop, async or not, and waits for it."""

    def __init__(self, ns: dict[str, Any], loop: _Loop) -> None:
        super().__init__(ns)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._loop = loop
        self._eof = False

    def push(self, line: str, *args: Any, **kwargs: Any) -> bool:
        """``name?`` (IPython's help syntax) shows help for ``name``."""
        match = HELP_TOPIC.match(line) if not self.buffer else None
        if match is not None:
            line = f"help({match.group(1)})"
        return super().push(line, *args, **kwargs)

    def showtraceback(self) -> None:
        """A short traceback: the user's frames and the error, not capkern's internals."""
        exc = sys.exc_info()[1]
        if exc is None:
            super().showtraceback()
            return
        errors = self.locals.get("_last_error") if isinstance(self.locals, dict) else None
        if isinstance(errors, list):
            errors[:] = [exc]
        self.write(short_traceback(exc))

    def raw_input(self, prompt: str = "") -> str:
        try:
            return input(prompt)
        except EOFError:
            if self.buffer and not self._eof:  # piped input ended inside a block: run it
                self._eof = True
                return ""
            raise

    def runcode(self, codeobj: types.CodeType) -> None:
        done = threading.Event()
        scope = trio.CancelScope()
        outcome: dict[str, Any] = {}

        async def statement() -> None:
            try:
                with scope:
                    try:
                        result = types.FunctionType(codeobj, self.locals)()
                        if inspect.iscoroutine(result):
                            await result
                    except trio.Cancelled:
                        raise
                    except SystemExit as exc:
                        outcome["exit"] = exc
                    except BaseException:  # shown; the prompt goes on
                        self.showtraceback()
                outcome["cancelled"] = scope.cancelled_caught
            finally:
                done.set()

        if not self._loop.soon(self._loop.start_statement, statement):
            self._kernel_gone()
        interrupts = 0
        while True:
            try:
                if done.wait(0.2):
                    break
                if not self._loop.alive():
                    self._kernel_gone()
            except KeyboardInterrupt:
                interrupts += 1
                self._loop.soon(scope.cancel)
                if interrupts > 1:
                    print("\n(the Trio loop is busy in code that never awaits; Ctrl-C "
                          "cannot interrupt it)", file=sys.stderr)
        if outcome.get("cancelled"):
            print("\nKeyboardInterrupt: statement cancelled (the kernel keeps running)",
                  file=sys.stderr)
        if "exit" in outcome:
            raise outcome["exit"]

    def _kernel_gone(self) -> None:
        print(f"the kernel is gone: {self._loop.error!r}", file=sys.stderr)
        raise SystemExit(1)


def run_repl(**options: Any) -> int:
    """Boot a kernel with ``options`` and run the prompt until Ctrl-D; the exit status."""
    loop = _Loop(options)
    loop.thread.start()
    try:
        loop.ready.wait()
    except KeyboardInterrupt:
        loop.stop()
        return 130
    if loop.error is not None or loop.host.kernel is None:
        print(f"capkern repl: could not boot: {loop.error}", file=sys.stderr)
        return 2
    ns = _namespace(loop.host, sys.stdout)
    console = _Console(ns, loop)
    if sys.stdin.isatty():
        try:
            import readline
            import rlcompleter

            readline.set_completer(rlcompleter.Completer(ns).complete)
            readline.parse_and_bind("tab: complete")
        except ImportError:
            pass
    banner = BANNER.format(progs=_program_list())
    status = 0
    sys.displayhook = displayhook
    try:
        console.interact(banner=banner, exitmsg="shutting down")
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        print("shutting down", file=sys.stderr)
    finally:
        sys.displayhook = sys.__displayhook__
        loop.stop()
    return status
