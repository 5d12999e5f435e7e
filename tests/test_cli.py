"""The capkern command as a person uses it: demo, bench --json, and bad options (usage errors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

import capkern

from .helpers import CAPKERN


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
                         "readahead", "mmap_huge", "sim_fifo", "sim_lru", "sim_opt", "fault_nbd",
                         "ipc_call_process", "major_fault_process", "fault_mirror",
                         "fault_erasure"}
    if data["fault_nbd"].get("skipped"):  # no nbdkit on this machine: no figures to check
        assert shutil.which("nbdkit") is None and data["fault_nbd"]["value"] is None
        del data["fault_nbd"]
    for r in data.values():
        assert {"value", "baseline", "ratio", "unit"} <= set(r)
        assert r["value"] > 0 and r["baseline"] > 0
        assert abs(r["ratio"] - r["value"] / r["baseline"]) < 1e-9


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
    from capkern._root import check_boot_options

    check_boot_options(blockdev=f"file:{tmp_path / 'swap.img'}")
    assert not (tmp_path / "swap.img").exists()  # checked, not created (boot creates it)
    with pytest.raises(capkern.ConfigError, match="is a directory"):
        check_boot_options(blockdev=f"file:{tmp_path}")
    with pytest.raises(capkern.ConfigError, match="bad boot options"):
        check_boot_options(nonsense=1)
