"""Review of the command line as a demanding user meets it: Ctrl-C at the prompt and
during an ``await``, bad reboot options, bad program arguments, piped scripts, and bad
``capkern demo`` / ``capkern repl`` options."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import capkern
from capkern import programs, repl

from ._terminal import CAPKERN, ctrl_c, read_until, repl_in_a_pty, run_repl

# -- the REPL in a terminal -----------------------------------------------------------------


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


# -- the REPL with piped stdin --------------------------------------------------------------


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


# -- programs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("prog", "args", "error"), [
    (programs.sequential, (-5,), "pages must be at least 0, not -5"),
    (programs.random_ws, (0,), "pages must be at least 1, not 0"),
    (programs.sequential, (4, -1), "rounds must be at least 0, not -1"),
    (programs.random_ws, (True,), "pages must be an int, not True"),
    (programs.zipf, (8, 10, -1.0), "Zipf exponent"),
    (programs.phased, (8, 2, "s"), "seed must be an int"),
    (programs.echo_client, (-1,), "count must be at least 0"),
    (programs.ping, (2.5,), "rounds must be an int"),
])
def test_builtin_programs_reject_bad_arguments(prog: Any, args: tuple[Any, ...],
                                               error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        programs.check_args(prog, *args)

    async def main() -> capkern.ExitStatus:
        async with capkern.boot(ram_pages=4) as kernel:
            return await kernel.wait(kernel.spawn(prog, *args))

    status = trio.run(main)
    assert status.state == "failed" and status.error is not None and error in status.error


def test_check_args_accepts_good_arguments() -> None:
    programs.check_args(programs.sequential)
    programs.check_args(programs.zipf, 8, 10, 1.5, 7)
    programs.check_args(programs.echo_server)


# -- reboot falls back when a boot that passed the checks fails anyway --------------------------


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


# -- bad command-line options -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["demo", "--blockdev", "file:/nonexistent/dir/x"], "does not exist"),
    (["demo", "--blockdev", "bogus"], "blockdev must be"),
    (["demo", "--ram", "0"], "ram_pages must be"),
    (["demo", "--processes", "0"], "--processes and --pages must be at least 1"),
    (["demo", "--pages", "-1"], "--processes and --pages must be at least 1"),
    (["demo", "--pages", "4"], "must exceed RAM"),
    (["repl", "--blockdev", "file:/nonexistent/dir/x"], "does not exist"),
    (["repl", "--ram", "-3"], "ram_pages must be"),
])
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    out = subprocess.run([*CAPKERN, *args], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "every property held" not in out.stdout


def test_check_boot_options_checks_a_file_device_path(tmp_path: Any) -> None:
    from capkern.cli import check_boot_options

    check_boot_options(blockdev=f"file:{tmp_path / 'swap.img'}")
    assert not (tmp_path / "swap.img").exists()  # checked, not created (boot creates it)
    with pytest.raises(capkern.ConfigError, match="is a directory"):
        check_boot_options(blockdev=f"file:{tmp_path}")
    with pytest.raises(capkern.ConfigError, match="bad boot options"):
        check_boot_options(nonsense=1)
