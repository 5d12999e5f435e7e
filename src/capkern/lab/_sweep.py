"""``capkern lab``: workloads x policies x frame counts on the real kernel.

Each cell is one :func:`capkern.lab._sim.run_sim` (its own boot, in its own process):
cells run in parallel on every core (a process pool) or on a Dask cluster, and the
results come back as plain rows -- for a rich table, CSV, JSON or a plot of fault
curves (faults vs frames, one line per policy, Belady anomalies marked).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError
from ._sim import resolve_policy, run_sim
from ._workloads import make_workload

__all__ = ["Cell", "Row", "anomalies", "plot", "rows_csv", "rows_json", "rows_table",
           "run_cell", "sweep"]


@dataclass(frozen=True)
class Cell:
    """One simulation: a named workload, a policy and a frame count, under a seed."""

    workload: str
    policy: str
    frames: int
    seed: int | None = 0


@dataclass(frozen=True)
class Row:
    workload: str
    policy: str
    frames: int
    references: int
    faults: int
    hit_rate: float
    seconds: float


def run_cell(cell: Cell) -> Row:
    """Run one cell (top-level so a process pool or a Dask worker can pickle it)."""
    refs = make_workload(cell.workload, cell.seed)
    r = run_sim(refs, cell.policy, cell.frames, seed=cell.seed)
    return Row(cell.workload, cell.policy, cell.frames, r.references, r.faults,
               round(r.hit_rate, 6), round(r.seconds, 6))


def _cells(workloads: Sequence[str], policies: Sequence[str], frames: Sequence[int],
           seed: int | None) -> list[Cell]:
    if not workloads or not policies or not frames:
        raise ConfigError("a sweep needs at least one workload, policy and frame count")
    for w in workloads:
        make_workload(w, seed)  # a bad name fails here, before any work starts
    for p in policies:
        resolve_policy(p, seed)
    for f in frames:
        if type(f) is not int or f < 1:
            raise ConfigError(f"frame counts must be ints >= 1, not {f!r}")
    return [Cell(w, p, f, seed) for w in workloads for p in policies for f in sorted(set(frames))]


def sweep(workloads: Sequence[str], policies: Sequence[str], frames: Sequence[int],
          seed: int | None = 0, jobs: int | None = None, dask: str | None = None,
          progress: Callable[[int, int], None] | None = None,
          connect_timeout: float = 10.0) -> list[Row]:
    """Run every cell; rows come back in cell order whatever order they finished in.

    ``jobs``: worker processes (default: every core; 1 runs in this process).
    ``dask``: a scheduler address (``tcp://host:8786``) to run the cells on a cluster.
    ``progress(done, total)`` is called as cells finish; ``connect_timeout`` bounds
    the wait for the Dask scheduler.
    """
    cells = _cells(workloads, policies, frames, seed)
    results: dict[int, Row] = {}

    def finished(i: int, row: Row) -> None:
        results[i] = row
        if progress:
            progress(len(results), len(cells))

    if dask:
        _on_dask(dask, cells, finished, connect_timeout)
    elif (jobs or os.cpu_count() or 1) == 1 or len(cells) == 1:
        for i, cell in enumerate(cells):
            finished(i, run_cell(cell))
    else:
        with ProcessPoolExecutor(max_workers=jobs or os.cpu_count()) as pool:
            futures = {pool.submit(run_cell, cell): i for i, cell in enumerate(cells)}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    return [results[i] for i in range(len(cells))]


def _on_dask(address: str, cells: list[Cell], finished: Callable[[int, Row], None],
             timeout: float) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--dask needs the dask extra: pip install 'capkern[dask]'") from None
    try:
        client = Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        futures = client.map(run_cell, cells, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in dask_completed(futures):  # type: ignore[no-untyped-call]
            finished(index[fut.key], fut.result())
    finally:
        client.close()  # type: ignore[no-untyped-call]


def anomalies(rows: Iterable[Row]) -> list[tuple[str, str, int]]:
    """(workload, policy, frames) where more frames gave MORE faults than the next
    smaller frame count of the sweep: Belady's anomaly."""
    series: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        series.setdefault((r.workload, r.policy), []).append(r)
    out = []
    for (w, p), rs in series.items():
        rs.sort(key=lambda r: r.frames)
        out += [(w, p, b.frames) for a, b in itertools.pairwise(rs) if b.faults > a.faults]
    return out


def rows_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(Row.__dataclass_fields__))
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    return buf.getvalue()


def rows_json(rows: Sequence[Row]) -> str:
    return json.dumps({"rows": [asdict(r) for r in rows],
                       "anomalies": [list(a) for a in anomalies(rows)]}, indent=1)


def rows_table(rows: Sequence[Row]) -> Any:
    """A rich table: one line per workload x policy, one column of faults per frame
    count; a Belady anomaly is marked ``!``.  Fits 80 columns up to ~9 frame counts."""
    from rich.table import Table

    frames = sorted({r.frames for r in rows})
    bad = set(anomalies(rows))
    table = Table(title="page faults by frames (! = Belady's anomaly)", title_justify="left",
                  padding=(0, 1))
    table.add_column("workload", max_width=14, overflow="ellipsis")
    table.add_column("policy", max_width=8)
    for f in frames:
        table.add_column(str(f), justify="right")
    grid: dict[tuple[str, str], dict[int, Row]] = {}
    for r in rows:
        grid.setdefault((r.workload, r.policy), {})[r.frames] = r
    for (w, p), cells in grid.items():
        table.add_row(w, p, *[
            "" if f not in cells else
            f"{cells[f].faults}{'!' if (w, p, f) in bad else ''}" for f in frames])
    return table


def plot(rows: Sequence[Row], path: str) -> None:
    """Fault curves (faults vs frames, one line per policy, one panel per workload) to
    ``path`` (.png or .svg); anomalies are circled in red."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'capkern[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not path.endswith((".png", ".svg")):
        raise ConfigError(f"plot file must end in .png or .svg, not {path!r}")
    workloads = list(dict.fromkeys(r.workload for r in rows))
    bad = set(anomalies(rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.4),
                             squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        for p in dict.fromkeys(r.policy for r in rows if r.workload == w):
            rs = sorted((r for r in rows if r.workload == w and r.policy == p),
                        key=lambda r: r.frames)
            ax.plot([r.frames for r in rs], [r.faults for r in rs], marker="o", ms=3, label=p)
            marks = [r for r in rs if (w, p, r.frames) in bad]
            if marks:
                ax.scatter([r.frames for r in marks], [r.faults for r in marks], s=120,
                           facecolors="none", edgecolors="red", linewidths=1.5, zorder=5,
                           label=f"{p}: Belady's anomaly")
        ax.set_title(w, fontsize=9)
        ax.set_xlabel("frames")
        ax.set_ylabel("page faults")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=80)
    except OSError as exc:
        raise ConfigError(f"cannot write plot {path!r}: {exc}") from None
    finally:
        plt.close(fig)
