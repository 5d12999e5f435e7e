"""``capkern lab`` sweeps: cells run on the real kernel in this process, in a process
pool and on a (local, loopback) Dask cluster, with the same rows every way; tables,
CSV/JSON and plots; Belady anomalies found."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from capkern.errors import ConfigError
from capkern.lab._sweep import (
    Row,
    anomalies,
    plot,
    rows_csv,
    rows_json,
    rows_table,
    sweep,
)

WORKLOADS = ["belady", "loop:n=40,pages=6"]
POLICIES = ["fifo", "lru", "opt"]


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return sweep(WORKLOADS, POLICIES, [1, 2, 3, 4, 5], jobs=1)


def test_rows_are_the_kernels_counts(rows: list[Row]) -> None:
    assert len(rows) == 2 * 3 * 5
    got = {(r.workload, r.policy, r.frames): r.faults for r in rows}
    assert got["belady", "fifo", 3] == 9 and got["belady", "fifo", 4] == 10
    assert got["belady", "opt", 4] == 6 and got["belady", "lru", 4] == 8
    # a loop one page larger than memory: LRU and FIFO miss every time, OPT does not
    assert got["loop:n=40,pages=6", "lru", 5] == 40
    assert got["loop:n=40,pages=6", "opt", 5] < 40


def test_anomalies_found_for_fifo_only(rows: list[Row]) -> None:
    assert anomalies(rows) == [("belady", "fifo", 4)]


def test_parallel_run_gives_the_same_rows(rows: list[Row]) -> None:
    done: list[tuple[int, int]] = []
    again = sweep(WORKLOADS, POLICIES, [1, 2, 3, 4, 5], jobs=2,
                  progress=lambda d, t: done.append((d, t)))
    assert [(r.workload, r.policy, r.frames, r.faults) for r in again] == \
        [(r.workload, r.policy, r.frames, r.faults) for r in rows]
    assert done[-1] == (30, 30) and len(done) == 30


def test_dask_local_cluster_gives_the_same_rows(rows: list[Row]) -> None:
    distributed = pytest.importorskip("distributed")  # in the test extra: always present
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        got = sweep(["belady"], ["fifo", "opt"], [3, 4], dask=cluster.scheduler_address)
    expect = {(r.policy, r.frames): r.faults for r in rows if r.workload == "belady"}
    assert [(r.policy, r.frames, r.faults) for r in got] == \
        [(p, f, expect[p, f]) for p in ("fifo", "opt") for f in (3, 4)]


def test_unreachable_dask_scheduler_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        sweep(["belady"], ["fifo"], [3], dask="tcp://127.0.0.1:1", connect_timeout=0.5)


def test_bad_cells_fail_before_any_work() -> None:
    for args in ((["nope"], ["fifo"], [3]), (["belady"], ["nope"], [3]),
                 (["belady"], ["fifo"], [0]), ([], ["fifo"], [3])):
        with pytest.raises(ConfigError):
            sweep(*args, jobs=1)


def test_csv_json_and_table(rows: list[Row]) -> None:
    parsed = list(csv.DictReader(io.StringIO(rows_csv(rows))))
    assert len(parsed) == len(rows) and parsed[0]["workload"] == "belady"
    assert int(parsed[3]["faults"]) == rows[3].faults
    data = json.loads(rows_json(rows))
    assert data["anomalies"] == [["belady", "fifo", 4]] and len(data["rows"]) == len(rows)
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(rows_table(rows))
    text = console.export_text()
    assert "10!" in text  # the anomaly is marked
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot(rows: list[Row], tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")  # in the test extra: always present
    out = tmp_path / f"curves{suffix}"
    plot(rows, str(out))
    head = out.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in out.read_bytes()
    with pytest.raises(ConfigError):
        plot(rows, str(tmp_path / "curves.pdf"))
