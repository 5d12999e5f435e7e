"""Built-in demo programs: working-set patterns and IPC pairs (for the demo and REPL).

Each memory program writes a pattern of pages derived from a seed, then reads it back
and checks every byte; it returns the number of wrong bytes (0, or it raised a typed
fault).  A program's data never depends on anything but its own arguments.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any

from ._pagefmt import PAGE_SIZE
from ._proc import Process
from .errors import CapkernError
from .mmu._aspace import VA_LIMIT

__all__ = ["check_args", "echo_client", "echo_server", "hostile_memory", "page_pattern",
           "phased", "ping", "pong", "random_ws", "remap", "sequential", "zipf"]

#: The spawnable built-in programs, by name.
PROGRAMS = ("echo_client", "echo_server", "hostile_memory", "phased", "ping", "pong",
            "random_ws", "remap", "sequential", "zipf")


def _int(name: str, value: Any, minimum: int) -> None:
    """``value`` must be an int (not a bool) no smaller than ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check(seed: Any = 0, **limits: tuple[Any, int]) -> None:
    for name, (value, minimum) in limits.items():
        _int(name, value, minimum)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, not {seed!r}")


def check_args(program: Callable[..., Any], *args: Any) -> None:
    """Raise TypeError/ValueError now if ``program(proc, *args)`` would reject ``args``.

    Checks that the arguments fit the program's signature and, for the built-in
    programs, that their values make sense (a working set of at least one page...).
    """
    try:
        bound = inspect.signature(program).bind(None, *args)
    except TypeError as exc:
        name = getattr(program, "__name__", repr(program))
        raise TypeError(f"bad arguments for program {name}: {exc}") from None
    except ValueError:  # no signature (a builtin): nothing to check
        return
    check = _CHECKS.get(getattr(program, "__name__", ""))
    if check is not None and getattr(program, "__module__", None) == __name__:
        bound.apply_defaults()
        check(*list(bound.arguments.values())[1:])


def page_pattern(seed: int, page: int, round_: int = 0) -> bytes:
    """The deterministic content a program writes to ``page`` in ``round_``."""
    rng = random.Random(seed * 1_000_003 + page * 7919 + round_)
    return rng.randbytes(PAGE_SIZE)


async def _touch(proc: Process, base: int, order: list[int], seed: int,
                 expected: dict[int, int], round_: int) -> int:
    """Write then verify ``order``'s pages; returns the count of wrong bytes."""
    wrong = 0
    for page in order:
        await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, round_))
        expected[page] = round_
    for page in order:
        got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
        want = page_pattern(seed, page, expected[page])
        wrong += sum(a != b for a, b in zip(got, want, strict=True))
    return wrong


async def sequential(proc: Process, pages: int = 64, rounds: int = 2, seed: int = 1) -> int:
    """Sweep a working set of ``pages`` pages in order, ``rounds`` times."""
    _check_sequential(pages, rounds, seed)
    if pages == 0:
        return 0  # nothing to map: a process that never faults
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    for r in range(rounds):
        wrong += await _touch(proc, base, list(range(pages)), seed, expected, r)
    return min(wrong, 255)


async def random_ws(proc: Process, pages: int = 64, touches: int = 256, seed: int = 2) -> int:
    """Touch random pages of the working set, verifying the last value written."""
    _check_random_ws(pages, touches, seed)
    rng = random.Random(seed)
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    for i in range(touches):
        page = rng.randrange(pages)
        if page in expected and rng.random() < 0.5:
            got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
            wrong += got != page_pattern(seed, page, expected[page])
        else:
            await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, i))
            expected[page] = i
    return min(wrong, 255)


async def zipf(proc: Process, pages: int = 64, touches: int = 256, s: float = 1.1,
               seed: int = 3) -> int:
    """Skewed (Zipf-like) access: a few hot pages, a long cold tail."""
    _check_zipf(pages, touches, s, seed)
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** s for k in range(pages)]
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    for i, page in enumerate(rng.choices(range(pages), weights, k=touches)):
        if page in expected:
            got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
            wrong += got != page_pattern(seed, page, expected[page])
        await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, i))
        expected[page] = i
    return min(wrong, 255)


async def phased(proc: Process, pages: int = 64, phases: int = 3, seed: int = 4) -> int:
    """Working set that moves: each phase sweeps a different half of the region."""
    _check_phased(pages, phases, seed)
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    half = max(1, pages // 2)
    for ph in range(phases):
        start = (ph * half // 2) % pages
        order = [(start + i) % pages for i in range(half)]
        wrong += await _touch(proc, base, order, seed, expected, ph)
    return min(wrong, 255)


async def remap(proc: Process, pages: int = 8, rounds: int = 3, seed: int = 5) -> int:
    """Map, write, unmap and map again at the *same* address, ``rounds`` times.

    Each new mapping must read zeros before it is written, then what was written -- never
    a previous mapping's data, whatever the pager hands back for it (the sealed copies of
    the old pages carry bindings that never come back)."""
    _check_sequential(pages, rounds, seed)
    if pages == 0:
        return 0
    length = pages * PAGE_SIZE
    base = proc.mmap(length)
    wrong = 0
    for r in range(rounds):
        if r:
            proc.munmap(base, length)
            proc.mmap(length, addr=base)
        for page in range(pages):
            got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
            wrong += sum(1 for b in got if b)  # a fresh mapping is demand-zero
            await proc.write(base + page * PAGE_SIZE, page_pattern(seed, page, r))
        for page in range(pages):
            got = await proc.read(base + page * PAGE_SIZE, PAGE_SIZE)
            want = page_pattern(seed, page, r)
            wrong += sum(a != b for a, b in zip(got, want, strict=True))
    return min(wrong, 255)


async def hostile_memory(proc: Process) -> int:
    """Throw bad addresses, lengths and counts at the memory syscalls.

    Every attempt must be refused with a typed capkern error before the kernel does any
    work for it.  Returns how many were *not* refused (0 when the kernel held)."""
    base = proc.mmap(PAGE_SIZE)
    await proc.write(base, b"mine")
    attempts: list[Callable[[], Any]] = [
        lambda: proc.mmap(PAGE_SIZE, addr=(1 << 64) * PAGE_SIZE),  # binding overflow
        lambda: proc.mmap(2 * PAGE_SIZE, addr=VA_LIMIT - PAGE_SIZE),  # runs off the end
        lambda: proc.mmap(PAGE_SIZE, addr=-PAGE_SIZE),
        lambda: proc.mmap(1 << 62),  # more than the address space
        lambda: proc.mmap(PAGE_SIZE, addr=base),  # overlaps
        lambda: proc.read(base, 1 << 30),  # a gigabyte from one page
        lambda: proc.read(base, -1),
        lambda: proc.read(1 << 64, 1),
        lambda: proc.read(base + PAGE_SIZE - 1, 2),  # runs into unmapped memory
        lambda: proc.write(base + PAGE_SIZE - 2, b"xyz"),
        lambda: proc.write(VA_LIMIT - 1, b"xy"),
        lambda: proc.munmap(base, 1 << 62),
        lambda: proc.munmap((1 << 64) * PAGE_SIZE, PAGE_SIZE),
    ]
    accepted = 0
    for attempt in attempts:
        try:
            result = attempt()
            if inspect.isawaitable(result):
                await result
            accepted += 1
            if type(result) is int:  # a mapping it should not have got: use it
                await proc.write(result, b"x")
        except CapkernError:
            pass
    if await proc.read(base, 4) != b"mine":  # a refused write must not land part-way
        accepted += 1
    return accepted


async def echo_server(proc: Process) -> None:
    """Answer every call on ``service`` with its body and the caller's badge."""
    msg = await proc.recv("service")
    while True:
        msg = await proc.reply_recv("service", "ok", {"echo": msg.body, "badge": msg.badge})


async def echo_client(proc: Process, count: int = 10) -> int:
    """Call ``server`` ``count`` times; returns the number of wrong echoes."""
    _check_count(count)
    wrong = 0
    for i in range(count):
        got = await proc.call("server", "echo", [proc.name, i])
        wrong += got.body["echo"] != [proc.name, i]
    return wrong


async def ping(proc: Process, rounds: int = 10) -> int:
    """Ping-pong over two notifications: signal ``out``, wait on ``in``."""
    _check_rounds(rounds)
    for _ in range(rounds):
        proc.signal("out")
        await proc.wait("in")
    return 0


async def pong(proc: Process, rounds: int = 10) -> int:
    """The other end of :func:`ping`: wait on ``in``, signal ``out``."""
    _check_rounds(rounds)
    for _ in range(rounds):
        await proc.wait("in")
        proc.signal("out")
    return 0


def _check_sequential(pages: Any, rounds: Any, seed: Any) -> None:
    _check(pages=(pages, 0), rounds=(rounds, 0), seed=seed)  # 0 pages: maps nothing


def _check_random_ws(pages: Any, touches: Any, seed: Any) -> None:
    _check(pages=(pages, 1), touches=(touches, 0), seed=seed)


def _check_zipf(pages: Any, touches: Any, s: Any, seed: Any) -> None:
    _check(pages=(pages, 1), touches=(touches, 0), seed=seed)
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not s > 0:
        raise ValueError(f"s (the Zipf exponent) must be a positive number, not {s!r}")


def _check_phased(pages: Any, phases: Any, seed: Any) -> None:
    _check(pages=(pages, 1), phases=(phases, 0), seed=seed)


def _check_count(count: Any) -> None:
    _check(count=(count, 0))


def _check_rounds(rounds: Any) -> None:
    _check(rounds=(rounds, 0))


_CHECKS: dict[str, Callable[..., None]] = {
    "sequential": _check_sequential, "random_ws": _check_random_ws, "zipf": _check_zipf,
    "phased": _check_phased, "echo_client": _check_count, "ping": _check_rounds,
    "pong": _check_rounds, "remap": _check_sequential,
}
