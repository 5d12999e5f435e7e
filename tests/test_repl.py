"""The REPL as a person uses it: in a pseudo-terminal (Ctrl-C at the prompt and during an
await), with piped stdin (scripts, exit statuses, clear errors), and reboots that fail."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import capkern
from capkern import _repl as repl
from capkern import programs

from .helpers import ctrl_c, read_until, repl_in_a_pty, run_repl


def test_repl_in_a_pseudo_terminal() -> None:
    with repl_in_a_pty("--ram", "8") as fd:  # leaves with Ctrl-D: a clean shutdown, exit 0
        os.write(fd, b'p = spawn("sequential", 24, 1, 3, name="seqA")\n')
        read_until(fd, b">>> ")
        os.write(fd, b"await wait(p)\n")
        screen = read_until(fd, b">>> ")
        assert b"state='exited'" in screen and b"code=0" in screen
        os.write(fd, b"ps()\n")
        screen = read_until(fd, b">>> ")
        assert b"seqA" in screen and b"pager" in screen and b"crypt" in screen
        os.write(fd, b"caps(3)\n")
        assert b"blockdev" in read_until(fd, b">>> ")
        # Ctrl-C cancels the running statement, not the kernel
        os.write(fd, b"await trio.sleep(1000)\n")
        ctrl_c(fd)
        assert b"cancelled" in read_until(fd, b">>> ")
        os.write(fd, b"stats()['faults'] > 0\n")
        assert b"True" in read_until(fd, b">>> ")


def test_repl_with_piped_stdin() -> None:
    script = "\n".join(['print("sum", 40 + 2)', "await reboot(ram_pages=4)",
                        "kernel.config.ram_pages", "1/0", 'print("alive")', ""])
    out = run_repl(script)
    assert out.returncode == 0, out.stderr
    assert "sum 42" in out.stdout and "alive" in out.stdout
    assert "\n4\n" in out.stdout.replace(">>> ", "")
    assert "ZeroDivisionError" in out.stderr


def test_ctrl_c_at_the_prompt_discards_the_half_typed_line() -> None:
    with repl_in_a_pty("--ram", "8") as fd:
        os.write(fd, b"1/")
        read_until(fd, b"1/")
        ctrl_c(fd)
        assert b"KeyboardInterrupt" in read_until(fd, b">>> ")  # a fresh prompt
        os.write(fd, b"20+22\n")
        screen = read_until(fd, b">>> ")
        assert b"42" in screen and b"0.9" not in screen  # not 1/20+22


def test_ctrl_c_cancels_only_the_await_and_processes_survive() -> None:
    with repl_in_a_pty("--ram", "8") as fd:
        os.write(fd, b"async def forever(proc): await trio.sleep(10**6)\n")
        read_until(fd, b"... ")
        os.write(fd, b"\n")
        read_until(fd, b">>> ")
        os.write(fd, b'p = spawn(forever, name="sleeper")\n')
        read_until(fd, b">>> ")
        os.write(fd, b"await trio.sleep(1000)\n")
        read_until(fd, b"await trio.sleep(1000)")
        ctrl_c(fd)
        screen = read_until(fd, b">>> ")
        assert b"statement cancelled" in screen
        assert b"Traceback" not in screen and b"trio.Cancelled" not in screen
        os.write(fd, b"ps()\n")
        screen = read_until(fd, b">>> ")
        assert b"sleeper" in screen and b"running" in screen
        os.write(fd, b"kernel.status(p) is None, stats()['spawns']\n")
        assert b"(True, 4)" in read_until(fd, b">>> ")


def test_reboot_with_bad_options_keeps_a_working_kernel() -> None:
    script = "\n".join([
        'p = spawn("sequential", 8, 1, name="before")',
        'await reboot(policy="bogus")',
        "await reboot(ram_pages=-1)",
        "await reboot(nonsense=1)",
        'await reboot(blockdev="file:/nonexistent/dir/x")',
        'print("policy", kernel.config.policy, "ram", kernel.config.ram_pages)',
        "print('same pid', (await wait(p)).name)",
        'print("after", (await wait(spawn("sequential", 12, 1))).code)',
        "",
    ])
    out = run_repl(script, "--ram", "8")
    assert out.returncode == 0, out.stderr
    assert "unknown replacement policy 'bogus'" in out.stderr
    assert "ram_pages must be" in out.stderr
    assert "nonsense" in out.stderr and "does not exist" in out.stderr
    assert out.stderr.count("(the kernel was not rebooted)\n") == 4
    assert "policy clock ram 8" in out.stdout
    assert "same pid before" in out.stdout and "after 0" in out.stdout


def test_spawn_and_program_errors_are_clear_and_immediate() -> None:
    script = "\n".join([
        'spawn("sequential", -5)',
        'spawn("sequential", "many")',
        'spawn("sequential", 1, 2, 3, 4)',
        'spawn("random")',
        "spawn(print)",
        "caps(999)",
        "kill(999)",
        'print("alive", len(kernel.domains()))',
        "",
    ])
    out = run_repl(script)
    assert out.returncode == 0, out.stderr
    assert "ValueError: pages must be at least 0, not -5" in out.stderr
    assert "TypeError: pages must be an int, not 'many'" in out.stderr
    assert "bad arguments for program sequential: too many positional" in out.stderr
    assert "unknown program 'random'" in out.stderr
    assert "must be an async function" in out.stderr
    assert out.stderr.count("NoSuchProcess: no domain with pid 999") == 2
    assert "slot name" not in out.stdout  # no table header for a pid that is not there
    assert "alive 3" in out.stdout  # nothing was spawned


def test_piped_script_ending_inside_a_block_still_runs_it() -> None:
    out = run_repl('for i in range(2):\n    print("row", i)')
    assert out.returncode == 0, out.stderr
    assert "row 0" in out.stdout and "row 1" in out.stdout


def test_exit_status_of_a_piped_script() -> None:
    out = run_repl('print("one")\nexit(3)\nprint("two")\n')
    assert out.returncode == 3
    assert "one" in out.stdout and "two" not in out.stdout
    assert "shutting down" in out.stderr


def test_reboot_that_fails_while_booting_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    real_boot = capkern.boot

    @asynccontextmanager
    async def flaky_boot(**options: Any) -> AsyncIterator[capkern.Kernel]:
        if options.get("ram_pages") == 5:
            raise OSError("the disk caught fire")
        async with real_boot(**options) as kernel:
            yield kernel

    monkeypatch.setattr(repl, "boot", flaky_boot)

    async def main() -> None:
        host = repl._Host({"ram_pages": 8})
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            ns = repl._namespace(host, io.StringIO())
            with pytest.raises(capkern.ConfigError, match="disk caught fire"):
                await host.reboot(ram_pages=5)
            assert host.kernel is not None and host.kernel.config.ram_pages == 8
            status = await host.kernel.wait(host.kernel.spawn(programs.sequential, 12, 1))
            assert status.ok
            kernel = await host.reboot(ram_pages=6)  # not through reboot(): as if cancelled
            assert kernel.config.ram_pages == 6 and ns["kernel"] is kernel
            nursery.cancel_scope.cancel()

    trio.run(main)
