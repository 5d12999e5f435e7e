"""The ``capkern`` command: ``demo``, ``repl``, ``dump``, ``bench``, ``sim``, ``lab`` and
``serve``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import _root as root
from .errors import ConfigError
from .servers.crypt import CIPHERS

__all__ = ["main"]

POLICY_CHOICES = ("fifo", "clock", "lru", "random")


def _boot_args(p: argparse.ArgumentParser, ram: int) -> None:
    p.add_argument("--ram", type=int, default=ram, help="frames of simulated RAM")
    p.add_argument("--policy", choices=POLICY_CHOICES, default="clock")
    p.add_argument("--blockdev", default="memory",
                   help="memory, file:PATH, nbd://HOST[:PORT][/EXPORT] or "
                   "nbd+unix:///EXPORT?socket=PATH (a real NBD server, e.g. nbdkit)")
    p.add_argument("--cipher", choices=[c for c in CIPHERS if c != "null"],
                   default="aes-256-gcm")
    p.add_argument("--isolation", choices=("task", "process"), default="task",
                   help="process: the pager and block device run in child OS processes")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="IPC, capabilities, sealed paging, attackers")
    _boot_args(demo, 16)
    demo.add_argument("--pager", action="append", default=None, metavar="tcp://HOST:PORT",
                      help="use a remote pager started with 'capkern serve pager'; given "
                      "several times, a pager set of them (see --pager-set)")
    demo.add_argument("--pager-set", choices=("mirror", "erasure"), default="mirror",
                      help="with several --pager: mirror copies, or erasure-coded shards")
    demo.add_argument("--copies", type=int, default=2,
                      help="mirror: copies of each page (default 2)")
    demo.add_argument("--needed", type=int, default=None,
                      help="erasure: shards that rebuild a page (default: pagers - 1)")
    demo.add_argument("--processes", type=int, default=3)
    demo.add_argument("--pages", type=int, default=40, help="working set per process")
    demo.add_argument("--quick", action="store_true", help="fewer attackers, smaller sets")
    demo.add_argument("--trace", metavar="PATH",
                      help="write the honest run as Perfetto trace-event JSON")

    repl = sub.add_parser("repl", help="a booted kernel and a Python prompt with await")
    _boot_args(repl, 64)
    repl.add_argument("--pager", metavar="MODULE:CLASS",
                      help="a ReplacementPolicy subclass to run in the pager")
    dump = sub.add_parser("dump", help="run a small scenario, print the system's capabilities")
    dump.add_argument("--format", choices=("capdl", "dot", "json"), default="capdl")
    dump.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    dump.add_argument("--trace", metavar="PATH",
                      help="also write the scenario as Perfetto trace-event JSON")
    bench = sub.add_parser("bench", help="benchmarks: value, baseline, ratio")
    bench.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bench.add_argument("--quick", action="store_true", help="tiny runs (smoke test only)")
    bench.add_argument("--scale", action="store_true",
                       help="also run the minutes-long 'scale' benchmark")
    bench.add_argument("--profile", action="store_true",
                       help="print where a major fault's time goes (cProfile), then exit")
    bench.add_argument("names", nargs="*", help="benchmarks by name, e.g. ipc_call, "
                       "fault_nbd, sim_lru (default: all but scale)")
    serve = sub.add_parser("serve", help="run an untrusted server for a remote kernel")
    serve.add_argument("what", choices=("pager",))
    serve.add_argument("--listen", required=True, metavar="HOST:PORT",
                       help="address to listen on (port 0: any free port, printed)")
    serve.add_argument("--policy", choices=POLICY_CHOICES, default="clock")
    serve.add_argument("--blockdev", default="memory", help="memory or file:PATH")
    serve.add_argument("--swap-blocks", type=int, default=8192)
    from .lab._cli import add_parsers

    add_parsers(sub)  # sim, lab
    return parser


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .isolation._spec import parse_tcp
    from .servers.pager import serve_pager

    if args.policy not in POLICY_CHOICES or args.swap_blocks < 2:
        parser.error("--swap-blocks must be at least 2")
    listen = args.listen.removeprefix("tcp://")
    wildcard = listen.endswith(":0")  # any free port
    try:
        host, port = parse_tcp("tcp://" + (listen[:-1] + "1" if wildcard else listen))
    except ConfigError as exc:
        parser.error(str(exc))
    port = 0 if wildcard else port

    def ready(bound: int) -> None:
        print(f"capkern pager listening on {host}:{bound}", flush=True)

    try:
        serve_pager(host, port, args.policy, args.blockdev, args.swap_blocks, ready)
    except KeyboardInterrupt:
        return 130
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import _bench as bench

    if args.profile:
        from ._bench_paging import profile_fault

        print(profile_fault())
        return 0
    unknown = [n for n in args.names if n not in bench.BENCHMARKS and n not in bench.HEAVY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda n: print(f"running {n}...", file=sys.stderr))
    names = list(args.names or bench.BENCHMARKS)
    if args.scale and "scale" not in names:
        names.append("scale")
    results = bench.run_all(names, progress, quick=args.quick)
    if args.json:
        print(json.dumps(results))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="capkern benchmarks")
    for col in ("benchmark", "value", "baseline", "ratio", "unit"):
        table.add_column(col)
    for name, r in results.items():
        if r.get("skipped"):
            table.add_row(name, "-", "-", "-", f"skipped: {r['skipped']}")
            continue
        table.add_row(name, f"{r['value']:.4g}", f"{r['baseline']:.4g}", f"{r['ratio']:.2f}x",
                      r["unit"])
    Console().print(table)
    if "major_fault" in results:
        rate = results["major_fault"]["faults_per_second"]
        print(f"major faults per second (sealed): {rate:.0f}")
    for name in ("fault_mirror", "fault_erasure"):
        if name in results:
            r = results[name]
            print(f"{name} storage overhead: {r['overhead_code']:.2f}x of each sealed page "
                  f"(code), {r['overhead_disk']:.0f} sealed-page slots on today's pagers")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    if args.command == "dump":
        return _dump(args)
    if args.command in ("sim", "lab"):
        from .lab._cli import run

        return run(args)
    if args.command == "serve":
        return _serve(args, parser)
    boot_options = {"ram_pages": args.ram, "policy": args.policy, "blockdev": args.blockdev,
                    "cipher": args.cipher, "isolation": args.isolation}
    set_options: dict[str, Any] = {}
    if args.command == "demo" and args.pager and len(args.pager) == 1:
        boot_options["pager"] = args.pager[0]  # tcp://HOST:PORT, a remote pager
    elif args.command == "demo" and args.pager:  # several: a pager set
        needed = args.needed if args.needed is not None else max(1, len(args.pager) - 1)
        set_options = {"pagers": tuple(args.pager), "pager_set": args.pager_set,
                       "copies": args.copies, "needed": needed}
        boot_options.update(set_options)
    try:
        root.check_boot_options(**boot_options)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command == "demo":
        from ._demo import DemoOptions, run_demo

        opts = DemoOptions(args.ram, args.policy, args.blockdev, args.cipher, args.processes,
                           args.pages, args.quick, args.trace, args.isolation,
                           boot_options.get("pager"), set_options)
        if args.quick:
            opts.pages = min(opts.pages, 24)
        if opts.processes < 1 or opts.pages < 1:
            parser.error("--processes and --pages must be at least 1")
        if opts.processes * opts.pages <= opts.ram_pages:
            parser.error(f"the working sets ({opts.processes} x {opts.pages} pages) must "
                         f"exceed RAM ({opts.ram_pages} frames) for the demo to page; raise "
                         f"--pages or lower --ram")
        return run_demo(opts)
    from ._repl import run_repl

    if args.pager:
        try:
            boot_options["pager"] = _load_pager(args.pager)
        except ConfigError as exc:
            parser.error(str(exc))
    return run_repl(**boot_options)


def _load_pager(spec: str) -> Any:
    """``module:Class`` (a ReplacementPolicy subclass) -> a pager program running it."""
    import importlib

    from .servers.pager import ReplacementPolicy, make_pager

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--pager wants MODULE:CLASS, not {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--pager {spec}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, ReplacementPolicy)):
        raise ConfigError(f"--pager {spec}: {obj!r} is not a ReplacementPolicy subclass")
    return make_pager(obj)


def _dump(args: argparse.Namespace) -> int:
    from ._dumpdemo import run_dump

    out = run_dump(args.format, args.trace)
    text = json.dumps(out, indent=1) + "\n" if isinstance(out, dict) else out
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
