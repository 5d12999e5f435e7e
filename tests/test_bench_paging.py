"""The fault-path benchmarks run (tiny sizes), report value/baseline/ratio consistently,
and ``--scale``/``--profile`` do what they say."""

from __future__ import annotations

import json
import subprocess
import sys

from capkern import _bench as bench
from capkern import _bench_paging as bench_paging

CAPKERN = [sys.executable, "-m", "capkern"]


def test_scale_runs_only_when_asked() -> None:
    assert "scale" not in bench.BENCHMARKS and "scale" in bench.HEAVY
    out = bench.run_all(["scale"], quick=True)["scale"]
    assert out["faults"] > 0 and out["peak_rss_mib"] > 0
    assert abs(out["ratio"] - out["value"] / out["baseline"]) < 1e-9
    # the baseline is the mean rate of several one-process runs; the best run beside it
    assert out["baseline_runs"] >= 5 and out["baseline_best"] >= out["baseline"]
    assert abs(out["ratio_best"] - out["value"] / out["baseline_best"]) < 1e-9


def test_major_fault_limit_is_composed_from_its_parts() -> None:
    out = bench.run_all(["major_fault_limit"], quick=True)["major_fault_limit"]
    assert set(out["parts"]) == {"round_trips", "aead_seal_unseal", "msgpack_page", "copy_page"}
    assert abs(out["baseline"] - sum(out["parts"].values())) < 1e-9
    assert out["value"] > out["parts"]["aead_seal_unseal"]


def test_metadata_counts_kernel_bytes_per_page() -> None:
    out = bench_paging.bench_metadata(pages=256)
    assert 0 < out["per_virtual_page"] < out["per_resident_page"] < 4096


def test_profile_names_the_fault_path() -> None:
    text = bench_paging.profile_fault(limit=60)
    assert "ncalls" in text and "capkern" in text


def test_cli_scale_flag_adds_scale() -> None:
    run = subprocess.run([*CAPKERN, "bench", "--json", "--quick", "--scale", "metadata"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert set(json.loads(run.stdout)) == {"metadata", "scale"}
