"""Assertions and workload helpers for adversarial scenarios.

:func:`run_workload` does not trust a program's own report of what it read: every
process runs behind a *checked* handle that keeps a shadow copy of what the process
wrote and compares every read against it.  The first wrong byte is recorded and raised
as :class:`WrongRead` (not a typed fault), so :func:`assert_no_wrong_reads` fails even
when the process would have counted the wrong byte and then died of an unrelated
typed fault, or a program does not check its reads at all.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from typing import Any

from .. import errors
from .._domain import ExitStatus
from .._pagefmt import PAGE_SIZE
from ..kernel import Kernel
from ..programs import page_pattern
from ._attackers import Evidence

__all__ = ["InsecureRun", "Workload", "WrongRead", "assert_no_plaintext", "assert_no_wrong_reads",
           "expected_pages", "is_typed_fault", "page_pattern_for", "run_workload"]


class InsecureRun(AssertionError):
    """A confidentiality check was asked of a run whose kernel gave it up (the null
    cipher): the kit refuses to call such a run secure."""


class WrongRead(AssertionError):
    """A process read bytes other than the ones it last wrote there (never a typed fault)."""


class Workload(list[ExitStatus]):
    """The exit statuses of a :func:`run_workload` run, plus what the kit observed:

    ``written`` -- every page content the processes wrote (the plaintexts to look for
    with :func:`assert_no_plaintext`); ``wrong_reads`` -- one line per wrong read."""

    def __init__(self, statuses: Iterable[ExitStatus] = ()) -> None:
        super().__init__(statuses)
        self.written: list[bytes] = []
        self.wrong_reads: list[str] = []


class _Shadow:
    """What one process wrote, page by page; pages whose content is unknown (a write
    that failed part-way) are left out and not checked.  Mapped, never-written pages are
    kept as ranges (known zero), so a huge mapping costs the kit no more than the kernel."""

    def __init__(self, name: str, ledger: Workload, seen: dict[bytes, None]) -> None:
        self.name = name
        self.ledger = ledger
        self.seen = seen
        self.pages: dict[int, bytearray] = {}
        self.zero: list[tuple[int, int]] = []  # page ranges [a, b) known to be zero

    def _drop(self, addr: int, length: int) -> None:
        first, end = addr // PAGE_SIZE, -(-(addr + length) // PAGE_SIZE)
        if end - first <= len(self.pages):
            gone = [p for p in range(first, end) if p in self.pages]
        else:
            gone = [p for p in self.pages if first <= p < end]
        for page in gone:
            del self.pages[page]
        self.zero = [piece for a, b in self.zero for piece in ((a, min(b, first)),
                                                               (max(a, end), b))
                     if piece[0] < piece[1]]

    def mapped(self, addr: int, length: int) -> None:
        self._drop(addr, length)
        self.zero.append((addr // PAGE_SIZE, -(-(addr + length) // PAGE_SIZE)))  # demand-zero

    def forget(self, addr: int, length: int) -> None:
        self._drop(addr, length)

    def _content(self, page: int) -> bytearray | None:
        buf = self.pages.get(page)
        if buf is None and any(a <= page < b for a, b in self.zero):
            return bytearray(PAGE_SIZE)
        return buf

    def wrote(self, addr: int, data: bytes) -> None:
        end = addr + len(data)
        for page in range(addr // PAGE_SIZE, -(-end // PAGE_SIZE)):
            base = page * PAGE_SIZE
            lo, hi = max(addr, base), min(end, base + PAGE_SIZE)
            buf = self.pages.setdefault(page, bytearray(PAGE_SIZE))
            buf[lo - base : hi - base] = data[lo - addr : hi - addr]
            self.seen[bytes(buf)] = None

    def check(self, addr: int, got: bytes) -> None:
        end = addr + len(got)
        for page in range(addr // PAGE_SIZE, -(-end // PAGE_SIZE)):
            buf = self._content(page)
            if buf is None:
                continue
            base = page * PAGE_SIZE
            lo, hi = max(addr, base), min(end, base + PAGE_SIZE)
            want, have = buf[lo - base : hi - base], got[lo - addr : hi - addr]
            if want != have:
                i = next(i for i, (a, b) in enumerate(zip(want, have, strict=True)) if a != b)
                line = (f"{self.name}: wrong byte at {lo + i:#x} "
                        f"(read {have[i]:#04x}, wrote {want[i]:#04x})")
                self.ledger.wrong_reads.append(line)
                raise WrongRead(line)


class _CheckedProcess:
    """A process handle that checks every read against what the process wrote."""

    def __init__(self, proc: Any, shadow: _Shadow) -> None:
        self._proc = proc
        self._shadow = shadow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proc, name)

    def __repr__(self) -> str:
        return repr(self._proc)

    def mmap(self, length: int, *args: Any, **kwargs: Any) -> int:
        addr: int = self._proc.mmap(length, *args, **kwargs)
        self._shadow.mapped(addr, length)
        return addr

    def munmap(self, addr: int, length: int) -> None:
        self._proc.munmap(addr, length)  # a refused munmap changes nothing
        self._shadow.forget(addr, length)

    async def write(self, addr: int, data: bytes) -> None:
        try:
            await self._proc.write(addr, data)
        except BaseException:
            if type(addr) is int and isinstance(data, bytes | bytearray | memoryview):
                self._shadow.forget(addr, len(data))  # part of it may have landed
            raise
        self._shadow.wrote(addr, bytes(data))

    async def read(self, addr: int, n: int) -> bytes:
        got: bytes = await self._proc.read(addr, n)
        self._shadow.check(addr, got)
        return got


def _checked(program: Any, name: str, ledger: Workload, seen: dict[bytes, None]) -> Any:
    @functools.wraps(program)
    async def checked(proc: Any, *args: Any) -> Any:
        return await program(_CheckedProcess(proc, _Shadow(name, ledger, seen)), *args)

    return checked


async def run_workload(kernel: Kernel, program: Any, *args: Any, copies: int = 1,
                       seeds: Iterable[int] | None = None) -> Workload:
    """Spawn ``copies`` of ``program(proc, *args, seed)`` and wait for all of them.

    With ``seeds``, each copy gets its seed appended to ``args``.  Every read a process
    makes is checked against what it wrote (see :class:`Workload`)."""
    seed_list = list(seeds) if seeds is not None else [None] * copies
    result = Workload()
    seen: dict[bytes, None] = {}
    pids = [kernel.spawn(_checked(program, f"w{i}", result, seen), *args,
                         *([] if s is None else [s]), name=f"w{i}")
            for i, s in enumerate(seed_list)]
    result.extend([await kernel.wait(pid) for pid in pids])
    result.written = [p for p in seen if p.strip(b"\x00")]
    return result


def assert_no_wrong_reads(statuses: Iterable[ExitStatus]) -> None:
    """Each process read back exactly what it wrote, or got a typed capkern fault.

    The built-in programs return their count of wrong bytes as exit code; with the
    statuses :func:`run_workload` returns, every read was also checked against what was
    written, so a wrong read followed by a typed fault still fails."""
    statuses = list(statuses) if not isinstance(statuses, Workload) else statuses
    wrong = getattr(statuses, "wrong_reads", [])
    assert not wrong, f"wrong data was read: {wrong[:5]}"
    for s in statuses:
        if s.state == "exited":
            assert s.code == 0, f"{s.name}: {s.code} wrong reads"
        elif s.state == "failed":
            assert is_typed_fault(s), (
                f"{s.name} failed with something other than a typed fault: {s.error}")


def is_typed_fault(status: ExitStatus) -> bool:
    """The process ended on a capkern memory fault (a subclass of ``errors.Fault``)."""
    if status.state != "failed" or not status.error:
        return False
    qualified = status.error.split(":", 1)[0]
    module, _, name = qualified.rpartition(".")
    cls = getattr(errors, name, None)
    return module == "capkern.errors" and isinstance(cls, type) and issubclass(cls, errors.Fault)


def assert_no_plaintext(evidence: Evidence, plaintexts: Iterable[bytes], *,
                        require_seen: bool = True) -> None:
    """No window of any plaintext page reached the untrusted side.

    Refuses to pass vacuously: with no plaintext to look for, or (unless
    ``require_seen=False``) an evidence object that saw nothing at all -- typically an
    ``evidence`` that is not the one handed to :func:`attack_pager`.  Refuses to pass,
    with :class:`InsecureRun`, when a kernel booted with the null cipher ran while the
    evidence was recording: such a run has no confidentiality to check."""
    wanted = [p for p in plaintexts if p.strip(b"\x00")]
    assert wanted, "no non-zero plaintext to look for: the check would pass vacuously"
    assert evidence.seen or not require_seen, (
        "the untrusted side saw nothing: is this the evidence passed to attack_pager "
        "(or the disk), and was there memory pressure? (require_seen=False to allow)")
    why = evidence.insecure_runs()
    if why:
        raise InsecureRun("refusing to call this run confidential: a kernel was booted "
                          f"INSECURE while the evidence was recording ({why[0]})")
    assert not evidence.saw_window_of(wanted), "plaintext reached the attacker"


def page_pattern_for(program: str, pages: int, seed: int, steps: int | None = None,
                     s: float = 1.1) -> list[bytes]:
    """Every page content the built-in ``program`` (by short name) writes.

    ``steps`` is the program's own count: rounds (``sequential``, ``remap``), phases
    (``phased``) or
    touches (``random``, ``zipf``; ``s`` is zipf's exponent).  By default it covers the
    programs' defaults (and any shorter run): 5 rounds or phases, ``max(256, 3 * pages +
    1)`` touches (a shorter run writes a prefix of a longer one).
    ``random``/``zipf`` are replayed exactly, so only pages they really write are listed.
    """
    if program in ("sequential", "phased", "remap"):
        return [page_pattern(seed, p, r) for p in range(pages) for r in range(steps or 5)]
    touches = max(256, 3 * pages + 1) if steps is None else steps
    rng = random.Random(seed)
    out: list[bytes] = []
    if program == "random":
        written: set[int] = set()
        for i in range(touches):
            page = rng.randrange(pages)
            if page in written and rng.random() < 0.5:
                continue
            out.append(page_pattern(seed, page, i))
            written.add(page)
        return out
    if program == "zipf":
        weights = [1 / (k + 1) ** s for k in range(pages)]
        for i, page in enumerate(rng.choices(range(pages), weights, k=touches)):
            out.append(page_pattern(seed, page, i))
        return out
    raise ValueError(f"unknown program {program!r}: sequential, phased, random or zipf")


def expected_pages(seed: int, pages: int, rounds: int) -> list[bytes]:
    """The plaintexts ``programs.sequential(pages, rounds, seed)`` writes."""
    return [page_pattern(seed, p, r) for p in range(pages) for r in range(rounds)]
