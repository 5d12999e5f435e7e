"""``capkern sim``: drive a reference string through a real booted kernel.

One process maps the pages of the string and references them, in order, through the
batched access syscall (:meth:`Process.access`): every reference walks the real page
table, every miss is a real fault -- zero-fill or page-in through the pager, the block
device and the sealer, with an eviction chosen by the pager's policy when RAM is full.
Nothing here decides a hit or a victim; it only reads what the kernel did.

The boot is set up so the counts are the textbook ones:

* RAM is exactly ``frames`` frames (servers hold none), so the references compete for
  exactly those;
* ``evict_batch=1`` (a larger batch evicts pages early and changes the counts: allowed,
  but warned about);
* ``precise=True``: the kernel reports every reference, in order, so LRU/LFU/MRU are exact;
* for a policy that needs the future (``opt``), the kernel's oracle mode supplies each
  reference's next-use position -- in handles, never addresses (see ``mmu/_reflog.py``);
* ``seed`` derives page handles (and the random policy's draws) from the seed.

With ``steps=True`` each reference is its own trap and the kernel's page table is read
after it (hit/miss, victim, which page each physical frame holds) -- for ``-c`` output;
otherwise the whole string is one trap.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from .._pagefmt import PAGE_SIZE
from .._proc import Process
from .._root import boot
from ..errors import ConfigError
from ..servers.pager import POLICIES, RandomPolicy, ReplacementPolicy, make_pager

__all__ = ["SimResult", "Step", "resolve_policy", "run_sim", "simulate"]


@dataclass
class Step:
    """One reference: page, hit or miss, the page evicted (if any), frame contents."""

    page: int
    hit: bool
    victim: int | None
    frames: list[int | None]


@dataclass
class SimResult:
    policy: str
    frames: int
    references: int
    faults: int
    hits: int
    seconds: float
    seed: int | None
    steps: list[Step] | None = None
    kernel: dict[str, int] = field(default_factory=dict)
    per_process: dict[int, int] = field(default_factory=dict)  # pid in the trace -> faults

    @property
    def hit_rate(self) -> float:
        return self.hits / self.references if self.references else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hit_rate"] = self.hit_rate
        if self.steps is None:
            del out["steps"]
        return out


def resolve_policy(spec: str | type[ReplacementPolicy],
                   seed: int | None = None) -> Callable[[], ReplacementPolicy]:
    """A policy factory from a name (``lru``), ``module:Class``, or a class."""
    if isinstance(spec, type):
        cls: type[Any] = spec
    elif not isinstance(spec, str):
        raise ConfigError(f"policy must be a name, module:Class or a class, not {spec!r}")
    elif spec in POLICIES:
        cls = POLICIES[spec]
    elif spec.partition(":")[0] in POLICIES:  # a parameter: ws:20 (tau), pff:8 (T)
        name, _, arg = spec.partition(":")
        if not arg.isdigit() or int(arg) < 1:
            raise ConfigError(f"policy parameter must be a positive int: {spec!r}")
        base = POLICIES[name]
        try:
            base(int(arg))  # type: ignore[call-arg]
        except TypeError:
            raise ConfigError(f"policy {name!r} takes no parameter") from None
        return lambda: base(int(arg))  # type: ignore[call-arg]
    elif ":" in spec:
        mod, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load policy {spec!r}: {exc}") from None
    else:
        raise ConfigError(f"unknown policy {spec!r}; choose from {', '.join(POLICIES)} "
                          f"or give module:Class")
    if not (isinstance(cls, type) and issubclass(cls, ReplacementPolicy)):
        raise ConfigError(f"{spec!r} is not a ReplacementPolicy subclass")
    if cls is RandomPolicy:
        return lambda: RandomPolicy(seed or 0)
    return cls


def _check(refs: Sequence[object], frames: int) -> None:
    if type(frames) is not int or frames < 1:
        raise ConfigError(f"frames must be an int >= 1, not {frames!r}")
    if not refs:
        raise ConfigError("the reference string is empty")
    for page in refs:
        if type(page) is not int or not 0 <= page < 1 << 20:
            raise ConfigError(f"page numbers must be ints in [0, 2**20), not {page!r}")


Ref = int | tuple[int, int]


async def simulate(refs: Sequence[Ref], policy: str | type[ReplacementPolicy], frames: int,
                   *, seed: int | None = None, steps: bool = False, write: bool = True,
                   evict_batch: int = 1, cipher: str = "aes-256-gcm") -> SimResult:
    """Run ``refs`` through a booted kernel with ``frames`` frames; see the module doc.

    ``refs`` are page numbers (one process), or ``(pid, page)`` pairs: then one process
    per pid, taking turns in trace order, competing for the same frames.
    """
    if refs and isinstance(refs[0], tuple):
        return await _simulate_processes(refs, policy, frames, seed=seed, write=write,
                                         evict_batch=evict_batch, cipher=cipher)
    _check(refs, frames)
    return await _simulate_one([r for r in refs if isinstance(r, int)], policy, frames,
                               seed=seed, steps=steps, write=write, evict_batch=evict_batch,
                               cipher=cipher)


async def _simulate_one(refs: list[int], policy: str | type[ReplacementPolicy], frames: int,
                        *, seed: int | None, steps: bool, write: bool, evict_batch: int,
                        cipher: str) -> SimResult:
    """One process references ``refs`` (page numbers)."""
    factory = resolve_policy(policy, seed)
    probe = factory()
    name = str(getattr(probe, "name", policy))
    future = bool(getattr(probe, "needs_future", False))
    if evict_batch != 1:
        warnings.warn(f"evict_batch={evict_batch}: evicting more than one page per fault "
                      "changes the fault counts from the textbook ones", stacklevel=2)
    # the distinct pages, mapped densely: sparse page numbers cost no page-table entries
    pages = sorted(set(refs))
    dense = {p: i for i, p in enumerate(pages)}
    out: dict[str, Any] = {}

    async def program(proc: Process) -> None:
        base = proc.mmap(len(pages) * PAGE_SIZE)
        out["first_vpn"] = base // PAGE_SIZE
        addrs = [base + dense[p] * PAGE_SIZE for p in refs]
        if not steps:
            t0 = time.perf_counter()
            out["hits"] = await proc.access(addrs, write=write, future=future)
            out["seconds"] = time.perf_counter() - t0
            return
        trail: list[Step] = []
        before: dict[int, int] = {}
        t0 = time.perf_counter()
        # the kernel knows the future only within one trap: give it the rest of the
        # string each time (quadratic; -c is for short strings), referencing one page
        for i, addr in enumerate(addrs):
            if future:
                hit = await proc.access(addrs[i:], write=write, future=True, count=1)
            else:
                hit = await proc.access([addr], write=write)
            now = resident()
            gone = [p for p in before if p not in now]
            trail.append(Step(refs[i], hit == b"\x01", gone[0] if gone else None,
                              [now_by_frame.get(f) for f in range(frames)]))
            before = now
        out["seconds"] = time.perf_counter() - t0
        out["steps"] = trail
        out["hits"] = bytes(int(s.hit) for s in trail)

    now_by_frame: dict[int, int] = {}

    def resident() -> dict[int, int]:
        """The root's view of the process's page table: page -> frame, for present pages."""
        now_by_frame.clear()
        aspace = kernel._domains[pid].aspace
        assert aspace is not None
        first = out["first_vpn"]  # page tables are sparse: entries exist once touched
        got = {pages[vpn - first]: pte.frame for vpn, pte in aspace.pages.items()
               if pte.present}
        now_by_frame.update({f: p for p, f in got.items()})
        return got

    async with boot(ram_pages=frames, evict_batch=evict_batch, precise=True, seed=seed,
                    pager=make_pager(factory), policy=name, cipher=cipher) as kernel:
        pid = kernel.spawn(program, name="sim")
        status = await kernel.wait(pid)
        if not status.ok:
            raise ConfigError(f"simulation failed: {status.error}")
        stats = kernel.stats.as_dict()
    hits = out["hits"]
    faults = len(hits) - sum(hits)
    return SimResult(name, frames, len(refs), faults, len(refs) - faults, out["seconds"], seed,
                     out.get("steps"), {k: stats[k] for k in
                                        ("faults", "zero_fills", "page_ins", "evictions",
                                         "clean_drops", "seals", "unseals")})


async def _simulate_processes(refs: Sequence[Ref], policy: str | type[ReplacementPolicy],
                              frames: int, *, seed: int | None, write: bool,
                              evict_batch: int, cipher: str) -> SimResult:
    """One process per pid of ``(pid, page)`` references, taking turns in trace order:
    each run of consecutive references by one pid is one trap of that process."""
    pairs: list[tuple[int, int]] = []
    for r in refs:
        if not (isinstance(r, tuple) and len(r) == 2 and all(type(x) is int for x in r)):
            raise ConfigError(f"references must all be (pid, page) pairs, not {r!r}")
        pairs.append(r)
    _check([p for _, p in pairs], frames)
    factory = resolve_policy(policy, seed)
    probe = factory()
    name = str(getattr(probe, "name", policy))
    future = bool(getattr(probe, "needs_future", False))
    if future:
        raise ConfigError(f"{name} needs the future of one trap; it simulates one process")
    runs: list[tuple[int, list[int]]] = []
    for pid, page in pairs:
        if runs and runs[-1][0] == pid:
            runs[-1][1].append(page)
        else:
            runs.append((pid, [page]))
    turns = [trio.Event() for _ in range(len(runs) + 1)]
    turns[0].set()
    hits: dict[int, bytes] = {}
    distinct = {p: i for i, p in enumerate(sorted({p for _, p in pairs}))}
    clock: list[float] = []

    async def program(proc: Process, me: int) -> None:
        base = proc.mmap(len(distinct) * PAGE_SIZE)
        for k, (pid, pages) in enumerate(runs):
            if pid != me:
                continue
            await turns[k].wait()
            if not clock:
                clock.append(time.perf_counter())
            try:
                hits[k] = await proc.access([base + distinct[p] * PAGE_SIZE for p in pages],
                                            write=write)
            finally:
                turns[k + 1].set()

    async with boot(ram_pages=frames, evict_batch=evict_batch, precise=True, seed=seed,
                    pager=make_pager(factory), policy=name, cipher=cipher) as kernel:
        pids = [kernel.spawn(program, me, name=f"p{me}")
                for me in dict.fromkeys(p for p, _ in pairs)]
        for pid in pids:
            status = await kernel.wait(pid)
            if not status.ok:
                raise ConfigError(f"simulation failed: {status.error}")
        seconds = time.perf_counter() - clock[0]
        stats = kernel.stats.as_dict()
    per: dict[int, int] = {}
    faults = 0
    for k, (pid, pages) in enumerate(runs):
        f = len(pages) - sum(hits[k])
        per[pid] = per.get(pid, 0) + f
        faults += f
    return SimResult(name, frames, len(pairs), faults, len(pairs) - faults, seconds, seed, None,
                     {k: stats[k] for k in ("faults", "zero_fills", "page_ins", "evictions",
                                            "clean_drops", "seals", "unseals")}, per)


def run_sim(refs: Sequence[Ref], policy: str | type[ReplacementPolicy], frames: int,
            **options: Any) -> SimResult:
    """:func:`simulate` in a fresh ``trio.run``."""
    return trio.run(lambda: simulate(refs, policy, frames, **options))
