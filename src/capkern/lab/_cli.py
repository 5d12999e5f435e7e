"""The ``capkern sim`` and ``capkern lab`` subcommands (argument parsing and output)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from ..errors import ConfigError
from ..servers.crypt import CIPHERS

__all__ = ["add_parsers", "parse_frames", "run"]


def parse_frames(text: str) -> list[int]:
    """``4``, ``1,2,3`` or ``1-8`` (ranges inclusive) -> sorted distinct frame counts."""
    out: set[int] = set()
    try:
        for part in filter(None, text.split(",")):
            lo, dash, hi = part.partition("-")
            out.update(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    except ValueError:
        raise ConfigError(f"frames must look like 4, 1,2,3 or 1-8, not {text!r}") from None
    if not out or min(out) < 1 or len(out) > 4096:
        raise ConfigError(f"frames must be between 1 and 4096 counts >= 1, not {text!r}")
    return sorted(out)


def add_parsers(sub: Any) -> None:
    sim = sub.add_parser("sim", help="run a reference string through the real kernel",
                         description="Drive a page reference string through a booted "
                         "kernel, pager and sealer (OSTEP paging-policy.py style).")
    src = sim.add_mutually_exclusive_group()
    src.add_argument("-a", "--addresses", help="reference string of page numbers: 7,0,1,2 "
                     "(or pid:page pairs, 1:0,2:0,1:1, for several processes)")
    src.add_argument("--trace", metavar="FILE", help="file of page numbers (# comments)")
    src.add_argument("-w", "--workload", help="named workload: belady, ostep, silberschatz, "
                     "tanenbaum, heavy[:n=..,pages=..,alpha=..], uniform, loop, phases")
    sim.add_argument("-p", "--policy", default="fifo",
                     help="fifo, lru, opt, clock, random, lfu, mru, local-lru, ws[:tau], "
                     "pff[:T] or module:Class")
    sim.add_argument("-f", "--frames", type=int, default=3, help="frames of RAM (default 3)")
    sim.add_argument("-c", "--compute", action="store_true",
                     help="print each access: hit/miss, victim, frame contents")
    sim.add_argument("--seed", type=int, default=None, help="seed handles/workload/random")
    sim.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sim.add_argument("--reads", action="store_true",
                     help="references are reads (a never-written page is dropped at eviction "
                          "and comes back as demand-zero; by default each reference writes "
                          "a byte, so every evicted page is really sealed and stored)")
    sim.add_argument("--evict-batch", type=int, default=1,
                     help="pages evicted per fault (not 1: counts differ from textbooks)")
    sim.add_argument("--cipher", choices=[c for c in CIPHERS if c != "null"],
                     default="aes-256-gcm")

    lab = sub.add_parser("lab", help="workloads x policies x frames: table, CSV, plot",
                         description="Run every workload under every policy at every frame "
                         "count on the real kernel, in parallel.")
    lab.add_argument("-w", "--workload", action="append",
                     help="workload (repeatable; default: belady, silberschatz, heavy)")
    lab.add_argument("-p", "--policy", action="append",
                     help="policy (repeatable; default: fifo, lru, opt, clock)")
    lab.add_argument("-f", "--frames", default="1-8", help="1-8 or 2,4,8 (default 1-8)")
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("-j", "--jobs", type=int, default=None, help="processes (default: cores)")
    lab.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler, tcp://host:8786")
    lab.add_argument("--csv", metavar="FILE", help="write the rows as CSV")
    lab.add_argument("--json", metavar="FILE", help="write rows and anomalies as JSON (- = stdout)")
    lab.add_argument("--plot", metavar="FILE", help="fault curves to FILE.png or FILE.svg")


def run(args: argparse.Namespace) -> int:
    """Run ``sim`` or ``lab``; a bad option is a one-line error and status 2."""
    try:
        return _sim(args) if args.command == "sim" else _lab(args)
    except ConfigError as exc:
        print(f"capkern {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _refs(args: argparse.Namespace) -> tuple[list[int] | list[tuple[int, int]], str]:
    from ._workloads import load_trace, make_workload, parse_refs

    if args.addresses:
        return parse_refs(args.addresses), "-a"
    if args.trace:
        return load_trace(args.trace), args.trace
    name = args.workload or "ostep"
    return make_workload(name, args.seed if args.seed is not None else 0), name


def _policy_name(spec: str) -> str:
    """Names are case-blind (OSTEP writes LRU); ``module:Class`` is kept as given."""
    return spec if ":" in spec else spec.lower()


def _fmt_frames(frames: list[int | None]) -> str:
    return "[" + " ".join("." if p is None else str(p) for p in frames) + "]"


def _sim(args: argparse.Namespace) -> int:
    from ._sim import run_sim

    refs, source = _refs(args)
    if args.compute and isinstance(refs[0], tuple):
        raise ConfigError("-c shows one process; drop it for pid:page traces")
    if args.evict_batch != 1:
        print(f"warning: --evict-batch {args.evict_batch} evicts more than one page per "
              "fault: the counts are not the textbook ones", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning above said it once, in CLI words
        result = run_sim(refs, _policy_name(args.policy), args.frames, seed=args.seed,
                         steps=args.compute, write=not args.reads, evict_batch=args.evict_batch,
                         cipher=args.cipher)
    if args.json:
        out = result.as_dict()
        out["source"] = source
        print(json.dumps(out))
        return 0
    print(f"capkern sim: policy {result.policy}, {args.frames} frames, {len(refs)} references "
          f"from {source} (real kernel, sealed pager, precise mode)")
    if result.steps is not None:
        print("  access  page  result  victim  frames (physical frame 0..n-1)")
        hits = 0
        for i, step in enumerate(result.steps, 1):
            hits += step.hit
            victim = "-" if step.victim is None else str(step.victim)
            print(f"  {i:6d}  {step.page:4d}  {'hit ' if step.hit else 'MISS'}  "
                  f"{victim:>6}  {_fmt_frames(step.frames)}  [hits {hits} misses {i - hits}]")
    if result.per_process:
        print("faults per process: " + ", ".join(
            f"pid {pid} {n}" for pid, n in sorted(result.per_process.items())))
    k = result.kernel
    print(f"FINALSTATS hits {result.hits}   misses {result.faults}   "
          f"hitrate {100 * result.hit_rate:.2f}")
    print(f"kernel: {k['faults']} faults ({k['zero_fills']} zero-fill, {k['page_ins']} "
          f"page-in), {k['evictions']} evictions ({k['seals']} sealed, "
          f"{k['clean_drops']} clean drops), {result.seconds:.3f} s")
    return 0


def _lab(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from ._sweep import plot, rows_csv, rows_json, rows_table, sweep

    workloads = args.workload or ["belady", "silberschatz", "heavy:n=2000,pages=60"]
    policies = [_policy_name(p) for p in args.policy or ["fifo", "lru", "opt", "clock"]]
    frames = parse_frames(args.frames)
    err = Console(stderr=True)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("simulating", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        rows = sweep(workloads, policies, frames, seed=args.seed, jobs=args.jobs,
                     dask=args.dask, progress=progress)
    if args.json == "-":
        print(rows_json(rows))
    else:
        Console(width=80).print(rows_table(rows))
    for path, text in ((args.csv, rows_csv), (args.json, rows_json)):
        if path and path != "-":
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text(rows))
            except OSError as exc:
                raise ConfigError(f"cannot write {path!r}: {exc}") from None
    if args.plot:
        plot(rows, args.plot)
        err.print(f"plot written to {args.plot}")
    return 0
