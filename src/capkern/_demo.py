"""``capkern demo``: IPC and capabilities, then sealed paging honest and under attack.

Exit status 0 only when every property held: the honest run read back every byte, no
attack produced a wrong read, no plaintext window reached the untrusted side, and no
confinement breach happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import _insecure as insecure
from . import programs
from ._config import BootConfig, Grant
from ._nbdaddr import is_nbd_spec
from ._proc import Process
from ._root import boot
from .errors import CapkernError
from .kernel import Kernel
from .testing import _attackers as atk
from .testing._assertions import is_typed_fault

__all__ = ["DemoOptions", "run_demo"]


REMAP_PAGES = 6


@dataclass
class DemoOptions:
    ram_pages: int = 16
    policy: str = "clock"
    blockdev: str = "memory"
    cipher: str = "aes-256-gcm"
    processes: int = 3
    pages: int = 40
    quick: bool = False
    trace: str | None = None  # write the honest run's Perfetto trace here
    isolation: str = "task"  # "process": pager and disk in child OS processes
    pager: str | None = None  # "tcp://HOST:PORT": a remote pager (capkern serve pager)
    #: several remote pagers as a set: boot options pagers, pager_set, copies, needed
    pager_set: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    name: str
    statuses: list[Any]
    stats: dict[str, int]
    evidence: atk.Evidence
    plaintext_seen: bool
    tried: int = 0
    wrong_reads: int = 0
    detected: int = 0
    notes: list[str] = field(default_factory=list)


def _attacks(quick: bool) -> list[tuple[str, Callable[[], atk.Tamper]]]:
    mix: list[tuple[str, Callable[[], atk.Tamper]]] = [
        ("bit-flip", lambda: atk.BitFlip("any", seed=1)),
        ("bit-flip tag", lambda: atk.BitFlip("tag", seed=2)),
        ("truncate", lambda: atk.Truncate()),
        ("extend", lambda: atk.Extend()),
        ("replay", lambda: atk.Replay()),
        ("swap pages", lambda: atk.Swap()),
        ("misdirect", lambda: atk.Misdirect()),
        ("zeros", lambda: atk.Zeros()),
        ("drop", lambda: atk.Drop()),
        ("hang", lambda: atk.Hang()),
        ("crash", lambda: atk.Crash()),
        ("garbage", lambda: atk.Garbage()),
        ("wrong label", lambda: atk.WrongLabel()),
        ("forge caps", lambda: atk.ForgeCaps()),
        ("reuse reply", lambda: atk.ReuseReply()),
        ("flood", lambda: atk.Flood(20)),
        ("flip p=0.2", lambda: atk.Sometimes(atk.BitFlip(seed=3), 0.2, seed=4)),
        ("disk exhausted", lambda: atk.ExhaustDisk()),
        ("replay discarded", lambda: atk.ReplayDiscarded()),
        ("caps in replies", lambda: atk.AttachCaps()),
        ("hoard quota", lambda: atk.HoardQuota()),
        ("revoke race", lambda: atk.RevokeRace()),
    ]
    return mix[::3] if quick else mix


async def _ipc_part(console: Console) -> bool:
    """Echo server, badged clients, a minted capability revoked mid-run."""
    ok = True
    async with boot(paging=False) as kernel:
        ep = kernel.new_endpoint("echo")
        kernel.spawn(programs.echo_server, name="echo-server",
                     caps={"service": Grant(ep, "r")})
        minted = kernel.mint(ep, "w", badge=99)
        outcome: dict[str, str] = {}

        async def revocable_client(proc: Process) -> int:
            first = await proc.call("server", "echo", "before revoke")
            outcome["before"] = f"reply {first.body['echo']!r} (badge {first.body['badge']})"
            await trio.sleep(0)
            while "revoked" not in outcome:
                await trio.sleep(0.001)
            try:
                await proc.call("server", "echo", "after revoke")
                outcome["after"] = "STILL REACHED THE SERVER"
                return 1
            except CapkernError as exc:
                outcome["after"] = f"{type(exc).__name__}: {exc}"
                return 0

        clients = [kernel.spawn(programs.echo_client, 20, name=f"client{i}",
                                caps={"server": Grant(ep, "w", badge=i + 1)}) for i in range(3)]
        victim = kernel.spawn(revocable_client, name="revocable",
                              caps={"server": Grant(minted, "w")})
        while "before" not in outcome:
            await trio.sleep(0.001)
        removed = await kernel.revoke(minted)
        outcome["revoked"] = str(removed)
        statuses = [await kernel.wait(p) for p in [*clients, victim]]
        ok = all(s.ok for s in statuses)
        table = Table(title="1. IPC and capabilities")
        table.add_column("what")
        table.add_column("result")
        table.add_row("badged clients x 20 calls", ", ".join(
            f"{s.name}: {'ok' if s.ok else s.state}" for s in statuses[:-1]))
        table.add_row("minted cap (w, badge 99)", outcome["before"])
        table.add_row("revoke at root", f"removed {removed} derived capabilities")
        table.add_row("call after revoke", outcome.get("after", "?"))
        table.add_row("IPC calls / caps in system", f"{kernel.stats.ipc_calls} / "
                      f"{sum(len(kernel.capabilities(d.pid)) for d in kernel.domains())}")
        console.print(table)
    return ok


async def _paging_run(opts: DemoOptions, name: str, tamper: atk.Tamper | None) -> RunResult:
    ev = atk.Evidence()
    pager = atk.attack_pager(*([tamper] if tamper else [atk.Snoop()]), evidence=ev)
    blockdev = opts.blockdev
    trace = opts.trace if tamper is None else None
    where = opts.pager_set or {"pager": opts.pager or pager}
    async with boot(ram_pages=opts.ram_pages, policy=opts.policy, blockdev=blockdev,
                    cipher=opts.cipher, pager_deadline=1.0, isolation=opts.isolation,
                    trace=trace is not None, **where) as kernel:
        pids = [kernel.spawn(programs.sequential, opts.pages, 2, seed, name=f"ws{seed}")
                for seed in range(opts.processes)]
        # unmaps and maps again at the same address: discarded pages' sealed copies
        # are fair game for the pager; and a process throwing bad addresses at the kernel
        pids.append(kernel.spawn(programs.remap, REMAP_PAGES, 3, opts.processes,
                                 name="remap"))
        pids.append(kernel.spawn(programs.hostile_memory, name="hostile"))
        statuses = [await kernel.wait(p) for p in pids]
        stats = _stats(kernel)
        if trace is not None:
            kernel.export_trace(trace)
    plaintexts = [programs.page_pattern(seed, page, r) for seed in range(opts.processes)
                  for page in range(opts.pages) for r in range(2)]
    plaintexts += [programs.page_pattern(opts.processes, page, r)
                   for page in range(REMAP_PAGES) for r in range(3)]
    result = RunResult(name, statuses, stats, ev, ev.saw_window_of(plaintexts))
    result.tried = sum(ev.tried.values()) + sum(ev.refused.values())
    result.wrong_reads = sum(1 for s in statuses if s.state == "exited" and s.code)
    result.detected = (stats["integrity_faults"] + stats["page_in_errors"]
                       + stats["pager_timeouts"] + stats["pager_protocol_errors"]
                       + stats["store_failures"] + sum(ev.refused.values()))
    return result


async def _ipc_bystander(proc: Process, calls: int) -> int:
    """A bystander: IPC with an echo server across the pager's death, no paged memory
    (a process whose pages were evicted depends on the pager: it is an owner)."""
    for i in range(calls):
        got = await proc.call("server", "echo", i)
        if got.body["echo"] != i:
            return 1
        await trio.sleep(0.002)
    return 0


async def _kill_run(opts: DemoOptions) -> tuple[RunResult, list[str]]:
    """Kill the pager's OS process mid-run: it is restarted (a new pid), owners of pages
    that died with it get PageLost, and no bystander fails."""
    import os
    import signal

    ev = atk.Evidence()
    pager = atk.attack_pager(atk.Snoop(), evidence=ev)
    notes: list[str] = []
    async with boot(ram_pages=opts.ram_pages, policy=opts.policy, blockdev=opts.blockdev,
                    cipher=opts.cipher, pager=pager, pager_deadline=1.0,
                    isolation="process") as kernel:
        def pager_row() -> Any:
            return next(d for d in kernel.domains() if d.name == "pager")

        owners = [kernel.spawn(programs.sequential, opts.pages, 3, seed, name=f"ws{seed}")
                  for seed in range(opts.processes)]
        ep = kernel.new_endpoint("echo")
        kernel.spawn(programs.echo_server, name="echo-server", caps={"service": Grant(ep, "r")})
        bystander = kernel.spawn(_ipc_bystander, 200, name="bystander",
                                 caps={"server": Grant(ep, "w", badge=1)})
        with trio.fail_after(60):
            while kernel.stats.evictions < opts.ram_pages:
                await trio.sleep(0.005)
            old = pager_row().os_pid
            if old is not None:
                os.kill(old, signal.SIGKILL)
            while pager_row().os_pid == old or pager_row().state != "running":
                await trio.sleep(0.005)
        new = pager_row().os_pid
        notes.append(f"pager os pid {old} -> {new}")
        after = kernel.spawn(programs.sequential, opts.pages, 2, 99, name="after-restart")
        statuses = [await kernel.wait(p) for p in [*owners, bystander, after]]
        stats = _stats(kernel)
    plaintexts = [programs.page_pattern(seed, page, r) for seed in [*range(opts.processes), 99]
                  for page in range(opts.pages) for r in range(3)]
    result = RunResult(f"pager OS process killed ({old} -> {new})", statuses, stats, ev,
                       ev.saw_window_of(plaintexts))
    result.tried = 1
    result.wrong_reads = sum(1 for s in statuses if s.state == "exited" and s.code)
    result.detected = stats["page_lost_faults"] + stats["pager_timeouts"]
    if old == new or old is None:
        notes.append("the pager's OS pid did not change")
    for s in statuses[len(owners):]:
        if not s.ok:
            notes.append(f"bystander {s.name} failed: {s.error}")
    for s in statuses[: len(owners)]:  # in flight or lost: a typed fault, never wrong data
        if not s.ok and not is_typed_fault(s):
            notes.append(f"owner {s.name} failed without a typed fault: {s.error}")
    return result, notes


def _stats(kernel: Kernel) -> dict[str, int]:
    return kernel.stats.as_dict()


def paging_table(runs: list[RunResult]) -> Table:
    """The paging results, one row per pager; fits an 80-column terminal without
    cutting a name or a number (no vertical rules: one blank between columns)."""
    table = Table(title="2-3. Paging, honest and under attack", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=0, show_edge=False)
    for col in ("pager", "ok", "faults", "seals", "unseals", "tried", "refused", "wrong",
                "leaked"):
        table.add_column(col, justify="right" if col != "pager" else "left", no_wrap=True)
    for r in runs:
        ok = sum(1 for s in r.statuses if s.ok)
        table.add_row(r.name, f"{ok}/{len(r.statuses)}", str(r.stats["faults"]),
                      str(r.stats["seals"]), str(r.stats["unseals"]),
                      str(r.tried), str(r.detected), str(r.wrong_reads),
                      "YES" if r.plaintext_seen else "0 B")
    table.caption = "leaked: plaintext seen by the untrusted side"
    return table


def paging_header(opts: DemoOptions, console: Console) -> None:
    """The paging part's header; an insecure configuration is said loudly."""
    pagers = opts.pager_set.get("pagers")
    where = opts.pager or ("pager and disk in child OS processes"
                           if opts.isolation == "process" else "in-process servers")
    if pagers:
        where = f"a {opts.pager_set['pager_set']} set of {', '.join(pagers)}"
    console.print(f"\n2. Sealed paging: {opts.processes} processes x {opts.pages} pages "
                  f"through {opts.ram_pages} frames ({opts.policy}, {opts.blockdev}, "
                  f"{opts.cipher}; {where})")
    why = insecure.reasons(BootConfig(cipher=opts.cipher))
    for reason in why:
        console.print(f"[bold red]INSECURE[/bold red] {reason}")


def run_demo(opts: DemoOptions, console: Console | None = None) -> int:
    console = console or Console()
    console.rule("[bold]capkern demo")
    ipc_ok = trio.run(_ipc_part, console)

    paging_header(opts, console)
    honest = trio.run(_paging_run, opts, "honest (snooping)", None)
    remote = bool(opts.pager or opts.pager_set)  # a remote pager is someone else's
    attacks = [] if remote else _attacks(opts.quick)
    results: list[RunResult] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("attackers in the pager's place", total=len(attacks))
        for name, make in attacks:
            if opts.isolation == "task" and opts.pager is None:
                # virtual time jumps when every task is idle; a real NBD server's answers
                # take real time, so there it jumps only after 50 ms of real idleness
                clock = trio.testing.MockClock(autojump_threshold=0.05 if is_nbd_spec(
                    opts.blockdev) else 0)
                results.append(trio.run(_paging_run, opts, name, make(), clock=clock))
            else:  # real child processes (or a remote pager) run on the real clock
                results.append(trio.run(_paging_run, opts, name, make()))
            progress.advance(task)
    kill_notes: list[str] = []
    if opts.isolation == "process" and not remote:
        killed, kill_notes = trio.run(_kill_run, opts)
        results.append(killed)

    console.print(paging_table([honest, *results]))
    set_rows: list[Any] = []
    if not remote:
        from ._demo_sets import pager_set_rows, pager_set_table

        set_rows = pager_set_rows(opts.quick)
        console.print(pager_set_table(set_rows))

    failures = [f"INSECURE: {why}" for why in insecure.reasons(BootConfig(cipher=opts.cipher))]
    if not ipc_ok:
        failures.append("IPC/capability part failed")
    if not all(s.ok for s in honest.statuses):
        failures.append("the honest run did not read back every byte")
    for r in [honest, *results]:
        if r.wrong_reads:
            failures.append(f"{r.name}: {r.wrong_reads} wrong reads")
        if r.plaintext_seen:
            failures.append(f"{r.name}: plaintext reached the untrusted side")
        if r.evidence.breaches:
            failures.append(f"{r.name}: confinement breach {r.evidence.breaches}")
    failures.extend(n for n in kill_notes if not n.startswith("pager os pid"))
    for row in set_rows:
        if row.wrong_reads:
            failures.append(f"pager set, {row.name}: {row.wrong_reads} wrong reads")
        if min(row.mirror, row.erasure) < row.procs:
            failures.append(f"pager set, {row.name}: a process did not finish")
    for n in kill_notes[:1]:
        console.print(f"kill/restart: {n}; bystanders ok: "
                      f"{'yes' if len(kill_notes) == 1 else 'NO'}")
    total_tried = sum(r.tried for r in results)
    total_detected = sum(r.detected for r in results)
    console.print(f"attacks tried: {total_tried}, detected/refused: {total_detected}, "
                  f"wrong reads: {sum(r.wrong_reads for r in results)}, plaintext bytes seen "
                  f"by the pager: {0 if not any(r.plaintext_seen for r in results) else 'SOME'}")
    if failures:
        for f in failures:
            console.print(f"[red]FAILED[/red] {f}")
        return 1
    console.print("[green]every property held[/green]")
    return 0
