"""Built-in demo programs: working-set patterns and IPC pairs (for the demo and REPL).

Each memory program writes a pattern of pages derived from a seed, then reads it back
and checks every byte; it returns the number of wrong bytes (0, or it raised a typed
fault).  A program's data never depends on anything but its own arguments.
"""

from __future__ import annotations

import random

from .pagefmt import PAGE_SIZE
from .proc import Process

__all__ = ["echo_client", "echo_server", "page_pattern", "phased", "ping", "pong",
           "random_ws", "sequential", "zipf"]


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
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    for r in range(rounds):
        wrong += await _touch(proc, base, list(range(pages)), seed, expected, r)
    return min(wrong, 255)


async def random_ws(proc: Process, pages: int = 64, touches: int = 256, seed: int = 2) -> int:
    """Touch random pages of the working set, verifying the last value written."""
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
    base = proc.mmap(pages * PAGE_SIZE)
    expected: dict[int, int] = {}
    wrong = 0
    half = max(1, pages // 2)
    for ph in range(phases):
        start = (ph * half // 2) % pages
        order = [(start + i) % pages for i in range(half)]
        wrong += await _touch(proc, base, order, seed, expected, ph)
    return min(wrong, 255)


async def echo_server(proc: Process) -> None:
    """Answer every call on ``service`` with its body and the caller's badge."""
    msg = await proc.recv("service")
    while True:
        msg = await proc.reply_recv("service", "ok", {"echo": msg.body, "badge": msg.badge})


async def echo_client(proc: Process, count: int = 10) -> int:
    """Call ``server`` ``count`` times; returns the number of wrong echoes."""
    wrong = 0
    for i in range(count):
        got = await proc.call("server", "echo", [proc.name, i])
        wrong += got.body["echo"] != [proc.name, i]
    return wrong


async def ping(proc: Process, rounds: int = 10) -> int:
    """Ping-pong over two notifications: signal ``out``, wait on ``in``."""
    for _ in range(rounds):
        proc.signal("out")
        await proc.wait("in")
    return 0


async def pong(proc: Process, rounds: int = 10) -> int:
    for _ in range(rounds):
        await proc.wait("in")
        proc.signal("out")
    return 0
