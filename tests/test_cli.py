"""The capkern command as a person uses it: demo, bench --json, and the REPL in a pty."""

from __future__ import annotations

import json
import os
import subprocess

from ._terminal import CAPKERN, ctrl_c, read_until, repl_in_a_pty, run_repl


def test_demo_exit_status_and_summary() -> None:
    out = subprocess.run([*CAPKERN, "demo", "--quick"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "160"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every property held" in out.stdout
    assert "wrong reads: 0" in out.stdout
    assert "plaintext bytes seen by the pager: 0" in out.stdout


def test_demo_bad_option_is_a_usage_error() -> None:
    out = subprocess.run([*CAPKERN, "demo", "--policy", "nope"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bench_json_parses() -> None:
    out = subprocess.run([*CAPKERN, "bench", "--json", "--quick"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"ipc_call", "seal_page", "major_fault", "major_fault_limit",
                         "fault_scale_ram", "fault_scale_procs", "resident_rw", "metadata",
                         "readahead"}
    for r in data.values():
        assert {"value", "baseline", "ratio", "unit"} <= set(r)
        assert r["value"] > 0 and r["baseline"] > 0
        assert abs(r["ratio"] - r["value"] / r["baseline"]) < 1e-9


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
