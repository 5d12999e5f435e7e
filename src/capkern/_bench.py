"""Benchmarks, each as value, baseline (measured in the same run) and ratio.

* ``ipc_call``: a capability-checked msgpack call/reply round trip between two domains
  vs a raw ``trio`` memory-channel round trip (us per round trip).
* ``seal_page``: seal + unseal of a 4096-byte page through :class:`Sealer` vs the raw
  ``cryptography`` AEAD encrypt + decrypt with the same associated-data length (us).
* ``major_fault``: a fault-heavy sweep with AES-256-GCM sealing vs the same run with the
  insecure ``null`` sealer over the same channels (us per major fault; faults/s shown).
* the fault path's own (``major_fault_limit``, ``fault_scale_ram``, ``fault_scale_procs``,
  ``resident_rw``, ``metadata``, and ``scale`` behind ``--scale``): see
  :mod:`capkern._bench_paging`.
* ``mmap_huge``: mmap + munmap of 2**22 pages (16 GiB of virtual memory, sparse page
  tables) vs the same for one page (us per pair; the ratio should be about 1).
* ``sim_fifo``, ``sim_lru``, ``sim_opt``: ``capkern sim`` on a 100,000-reference
  heavy-tailed trace over 1,000 pages with 100 frames -- the real kernel, pager and
  sealer -- vs a plain in-memory simulator of the same policy (seconds; both must give
  the same fault count, which is checked).
* ``fault_nbd``: the same sealed sweep with the block device on a real NBD server
  (``nbdkit memory`` on loopback TCP) vs the in-memory block device (us per major fault).
  Without nbdkit installed it reports ``skipped`` and no figures.
* ``ipc_call_process``: a call/reply to a server running in a child OS process vs a raw
  round trip of the same bytes over a Unix socketpair to a child that echoes them (us).
* ``major_fault_process``: the ``major_fault`` sweep with the pager and block device in
  child processes (``isolation="process"``) vs the same sweep in-process (us per fault).
* ``fault_mirror``, ``fault_erasure``: the sweep with a pager set (a mirror of 3; an
  erasure code n=5, m=3) vs one pager, with each mode's storage overhead: see
  :mod:`capkern._bench_pagerset`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import trio

from . import _bench_pagerset as bench_pagerset
from . import _bench_paging as bench_paging
from ._config import Grant
from ._cspace import Rights
from ._insecure import InsecureWarning
from ._pagefmt import PAGE_SIZE
from ._proc import Process
from ._root import boot

__all__ = ["BENCHMARKS", "bench_fault_nbd", "bench_ipc_call", "bench_ipc_call_process",
           "bench_major_fault", "bench_major_fault_process", "bench_mmap_huge",
           "bench_seal_page", "bench_sim", "echo_server", "run_all"]

Result = dict[str, Any]


async def _ipc_round_trips(n: int) -> float:
    result: list[float] = []

    async def server(proc: Process) -> None:
        msg = await proc.recv("ep")
        while True:
            msg = await proc.reply_recv("ep", "ok", msg.body)

    async def client(proc: Process, n: int) -> None:
        body = {"op": "ping", "n": 0}
        t0 = time.perf_counter()
        for i in range(n):
            body["n"] = i
            await proc.call("ep", "ping", body)
        result.append((time.perf_counter() - t0) / n)

    async with boot(paging=False) as kernel:
        ep = kernel.new_endpoint("bench")
        kernel.spawn(server, name="server", caps={"ep": ep})
        pid = kernel.spawn(client, n, name="client", caps={"ep": Grant(ep, "w", 1)})
        status = await kernel.wait(pid)
        assert status.ok, status
    return result[0]


async def echo_server(proc: Process) -> None:
    """Answer every call with its own body (run in a child process by name)."""
    msg = await proc.recv("ep")
    while True:
        msg = await proc.reply_recv("ep", "ok", msg.body)


_ECHO = """
import socket, struct, sys
s = socket.socket(fileno=int(sys.argv[1]))
f = s.makefile("rb")
while True:
    h = f.read(4)
    if len(h) < 4:
        break
    s.sendall(h + f.read(struct.unpack(">I", h)[0]))
"""


async def _raw_socket_round_trips(n: int, size: int) -> float:
    """Round trips of one ``size``-byte frame to an echoing child over a socketpair."""
    import socket
    import sys

    ours, theirs = socket.socketpair()
    proc = await trio.lowlevel.open_process([sys.executable, "-c", _ECHO, str(theirs.fileno())],
                                            pass_fds=(theirs.fileno(),))
    theirs.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    frame = len(b"x" * size).to_bytes(4, "big") + b"x" * size
    try:
        for warm in (True, False):
            t0 = time.perf_counter()
            for _ in range(50 if warm else n):
                await stream.send_all(frame)
                got = 0
                while got < len(frame):
                    got += len(await stream.receive_some(1 << 16))
            elapsed = time.perf_counter() - t0
    finally:
        await stream.aclose()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return elapsed / n


async def _ipc_process_round_trips(n: int) -> tuple[float, int]:
    from .isolation import spawn_isolated

    result: list[float] = []
    body = {"op": "ping", "n": 0}

    async def client(proc: Process, n: int) -> None:
        for _ in range(50):  # the child starts and warms up
            await proc.call("ep", "ping", body)
        t0 = time.perf_counter()
        for i in range(n):
            body["n"] = i
            await proc.call("ep", "ping", body)
        result.append((time.perf_counter() - t0) / n)

    async with boot(paging=False) as kernel:
        ep = kernel.new_endpoint("bench")
        spawn_isolated(kernel, echo_server, name="server", caps={"ep": ep})
        pid = kernel.spawn(client, n, name="client", caps={"ep": Grant(ep, "w", 1)})
        status = await kernel.wait(pid)
        assert status.ok, status
    import msgpack

    # what crosses the socket per call: the request frame to the child, and its reply
    size = len(msgpack.packb(["res", 1, 1, ["msg", "ping", msgpack.packb(body), 1, [], True]]))
    return result[0], size


def bench_ipc_call_process(n: int = 5000, repeats: int = 3) -> Result:
    """Best-of-``repeats`` us per call to a child-process server vs raw socketpair."""
    runs = [trio.run(_ipc_process_round_trips, n) for _ in range(repeats)]
    ipc = min(r[0] for r in runs)
    size = runs[0][1]
    raw = min(trio.run(_raw_socket_round_trips, n, size) for _ in range(repeats))
    return {"value": ipc * 1e6, "baseline": raw * 1e6, "ratio": ipc / raw, "unit": "us",
            "frame_bytes": size}


def bench_ipc_call(n: int = 20_000, repeats: int = 5) -> Result:
    """Best-of-``repeats`` microseconds per round trip, IPC and raw."""
    raw = min(trio.run(bench_paging.raw_round_trips, n, time.perf_counter)
              for _ in range(repeats))
    ipc = min(trio.run(_ipc_round_trips, n) for _ in range(repeats))
    return {"value": ipc * 1e6, "baseline": raw * 1e6, "ratio": ipc / raw, "unit": "us"}


def bench_seal_page(n: int = 3000, repeats: int = 5) -> Result:
    """Sealer seal+unseal of one page vs the raw AEAD calls, microseconds."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .servers.crypt import Binding, Sealer

    page = os.urandom(PAGE_SIZE)
    sealer = Sealer("aes-256-gcm")
    binding = Binding(os.urandom(16), 1, 0, 42, 7)
    aead = AESGCM(AESGCM.generate_key(256))
    nonce = bytes(12)
    ad = binding.associated_data()

    def ours() -> None:
        sealer.unseal(binding, sealer.seal(binding, page))

    def raw() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, page, ad), ad)

    value, baseline = _best(ours, n, repeats), _best(raw, n, repeats)
    return {"value": value, "baseline": baseline, "ratio": value / baseline, "unit": "us"}


def _best(fn: Callable[[], None], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


async def _fault_sweep(cipher: str, pages: int, ram: int, rounds: int,
                       blockdev: str = "memory", isolation: str = "task") -> tuple[float, int]:
    return await bench_pagerset.fault_sweep(pages, ram, rounds, cipher=cipher,
                                            blockdev=blockdev, isolation=isolation)


def bench_major_fault(pages: int = 256, ram: int = 32, rounds: int = 3, repeats: int = 3) -> Result:
    """Microseconds per major fault (evict + page-in), sealed vs null sealer."""

    def per_fault(cipher: str) -> tuple[float, int]:
        runs = [trio.run(_fault_sweep, cipher, pages, ram, rounds) for _ in range(repeats)]
        elapsed, faults = min(runs)
        return elapsed / max(1, faults) * 1e6, faults

    sealed, faults = per_fault("aes-256-gcm")
    with warnings.catch_warnings():  # the insecure baseline is deliberate here
        warnings.simplefilter("ignore", InsecureWarning)
        null, _ = per_fault("null")
    return {"value": sealed, "baseline": null, "ratio": sealed / null, "unit": "us",
            "faults_per_second": 1e6 / sealed, "major_faults": faults}


def bench_mmap_huge(pages: int = 1 << 22, n: int = 2000, repeats: int = 3) -> Result:
    """Microseconds per mmap+munmap of ``pages`` pages vs of one page, in one process."""
    from .mmu._aspace import AddressSpace

    space = AddressSpace(1, 0)
    rw = Rights.READ | Rights.WRITE

    def pair(npages: int) -> Callable[[], None]:
        def run() -> None:
            space.unmap_region(space.map_region(npages, rw), npages * PAGE_SIZE)
        return run

    value, baseline = _best(pair(pages), n, repeats), _best(pair(1), n, repeats)
    return {"value": value, "baseline": baseline, "ratio": value / baseline, "unit": "us",
            "pages": pages}


def bench_sim(policy: str, n: int = 100_000, pages: int = 1000, frames: int = 100) -> Result:
    """Seconds for ``capkern sim`` on the heavy-tailed trace vs the plain simulator."""
    from .lab._reference import SIMULATORS
    from .lab._sim import run_sim
    from .lab._workloads import make_workload

    refs = make_workload(f"heavy:n={n},pages={pages}", seed=0)
    t0 = time.perf_counter()
    result = run_sim(refs, policy, frames, seed=0)
    value = time.perf_counter() - t0
    t0 = time.perf_counter()
    expect = SIMULATORS[policy](refs, frames)
    baseline = time.perf_counter() - t0
    if result.faults != expect:
        raise AssertionError(f"sim {policy}: kernel {result.faults} faults, plain {expect}")
    return {"value": value, "baseline": baseline, "ratio": value / baseline, "unit": "s",
            "faults": result.faults, "references": n, "us_per_fault":
            value / max(1, result.faults) * 1e6}


def bench_sim_fifo(**kw: int) -> Result:
    return bench_sim("fifo", **kw)


def bench_sim_lru(**kw: int) -> Result:
    return bench_sim("lru", **kw)


def bench_sim_opt(**kw: int) -> Result:
    return bench_sim("opt", **kw)


def bench_fault_nbd(pages: int = 256, ram: int = 32, rounds: int = 3, repeats: int = 3) -> Result:
    """Microseconds per sealed major fault, block device on nbdkit (loopback TCP) vs in
    memory; each run boots afresh, the best of ``repeats`` counts."""
    from .testing.nbdkit import nbdkit_path, nbdkit_server

    if nbdkit_path() is None:
        return {"value": None, "baseline": None, "ratio": None, "unit": "us",
                "skipped": "nbdkit is not installed (apt-get install nbdkit)"}

    async def on_nbd() -> tuple[float, int]:
        async with nbdkit_server("64M", tcp=True) as server:
            return await _fault_sweep("aes-256-gcm", pages, ram, rounds, server.spec)

    def per_fault(runs: list[tuple[float, int]]) -> tuple[float, int]:
        elapsed, faults = min(runs)
        return elapsed / max(1, faults) * 1e6, faults

    nbd_runs, memory_runs = [], []
    for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
        nbd_runs.append(trio.run(on_nbd))
        memory_runs.append(trio.run(_fault_sweep, "aes-256-gcm", pages, ram, rounds))
    nbd, faults = per_fault(nbd_runs)
    memory, _ = per_fault(memory_runs)
    return {"value": nbd, "baseline": memory, "ratio": nbd / memory, "unit": "us",
            "major_faults": faults}


def bench_major_fault_process(pages: int = 256, ram: int = 32, rounds: int = 3,
                              repeats: int = 3) -> Result:
    """Microseconds per major fault with the pager and disk in child processes vs the
    same sweep with them in-process (both sealed with AES-256-GCM)."""

    def per_fault(isolation: str) -> tuple[float, int]:
        runs = [trio.run(_fault_sweep, "aes-256-gcm", pages, ram, rounds, "memory", isolation)
                for _ in range(repeats)]
        elapsed, faults = min(runs)
        return elapsed / max(1, faults) * 1e6, faults

    isolated, faults = per_fault("process")
    inproc, _ = per_fault("task")
    return {"value": isolated, "baseline": inproc, "ratio": isolated / inproc, "unit": "us",
            "faults_per_second": 1e6 / isolated, "major_faults": faults}


BENCHMARKS: dict[str, Callable[..., Result]] = {
    "ipc_call": bench_ipc_call,
    "seal_page": bench_seal_page,
    "major_fault": bench_major_fault,
    "major_fault_limit": bench_paging.bench_major_fault_limit,
    "fault_scale_ram": bench_paging.bench_fault_scale_ram,
    "fault_scale_procs": bench_paging.bench_fault_scale_procs,
    "resident_rw": bench_paging.bench_resident_rw,
    "readahead": bench_paging.bench_readahead,
    "metadata": bench_paging.bench_metadata,
    "mmap_huge": bench_mmap_huge,
    "sim_fifo": bench_sim_fifo,
    "sim_lru": bench_sim_lru,
    "sim_opt": bench_sim_opt,
    "fault_nbd": bench_fault_nbd,
    "ipc_call_process": bench_ipc_call_process,
    "major_fault_process": bench_major_fault_process,
    "fault_mirror": bench_pagerset.bench_fault_mirror,
    "fault_erasure": bench_pagerset.bench_fault_erasure,
}
#: minutes long: run only when named (``capkern bench --scale``)
HEAVY: dict[str, Callable[..., Result]] = {"scale": bench_paging.bench_scale}


QUICK: dict[str, dict[str, int]] = {
    "ipc_call": {"n": 500, "repeats": 1},
    "seal_page": {"n": 100, "repeats": 1},
    "major_fault": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "major_fault_limit": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "fault_scale_ram": {"small": 16, "big": 64, "extra": 16},
    "fault_scale_procs": {"procs": 4, "pages": 32, "ram": 8, "repeats": 1},
    "resident_rw": {"n": 500, "repeats": 1},
    "readahead": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "metadata": {"pages": 64},
    "scale": {"procs": 4, "pages": 16, "ram": 32, "base_seconds": 0},
    "mmap_huge": {"n": 50, "repeats": 1},
    "sim_fifo": {"n": 2000, "pages": 100, "frames": 10},
    "sim_lru": {"n": 2000, "pages": 100, "frames": 10},
    "sim_opt": {"n": 2000, "pages": 100, "frames": 10},
    "fault_nbd": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "ipc_call_process": {"n": 200, "repeats": 1},
    "major_fault_process": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "fault_mirror": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
    "fault_erasure": {"pages": 48, "ram": 16, "rounds": 1, "repeats": 1},
}


def run_all(names: list[str] | None = None, progress: Callable[[str], None] | None = None,
            quick: bool = False) -> dict[str, Result]:
    """Run benchmarks by name (all by default); ``quick`` shrinks them for smoke tests."""
    out = {}
    for name in names or list(BENCHMARKS):
        if progress:
            progress(name)
        bench = BENCHMARKS.get(name) or HEAVY[name]
        out[name] = bench(**(QUICK[name] if quick else {}))
    return out
