"""Reference strings: the classic textbook ones and seeded synthetic workloads (sans-IO).

A workload is named ``name`` or ``name:key=value,key=value``; every random one takes the
run's seed, so the same seed gives the same string.  :func:`parse_refs` reads ``-a``
strings and trace files.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["CLASSIC", "WORKLOADS", "load_trace", "make_workload", "parse_refs"]

#: the classic strings of the textbooks
CLASSIC: dict[str, list[int]] = {
    # Belady, Nelson, Shedler (1969): FIFO faults 9 with 3 frames, 10 with 4
    "belady": [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5],
    # OSTEP chapter 22 (Beyond Physical Memory: Policies), figures 22.1-22.3
    "ostep": [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 1],
    # Silberschatz, Operating System Concepts, 9.4: FIFO 15, OPT 9, LRU 12 with 3 frames
    "silberschatz": [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1],
    # Tanenbaum, Modern Operating Systems: Belady's anomaly example
    "tanenbaum": [0, 1, 2, 3, 0, 1, 4, 0, 1, 2, 3, 4],
}

MAX_PAGES = 1 << 20


def _int(params: dict[str, str], key: str, default: int, lo: int = 1) -> int:
    try:
        value = int(params.pop(key, default))
    except ValueError:
        raise ConfigError(f"workload parameter {key} must be an int") from None
    if value < lo:
        raise ConfigError(f"workload parameter {key} must be >= {lo}")
    return value


def _float(params: dict[str, str], key: str, default: float) -> float:
    try:
        return float(params.pop(key, default))
    except ValueError:
        raise ConfigError(f"workload parameter {key} must be a number") from None


def zipf(rng: random.Random, n: int, pages: int, alpha: float) -> list[int]:
    """Heavy-tailed: page ``k`` (of a seeded permutation) with weight ``1/(k+1)**alpha``."""
    cum = list(itertools.accumulate(1.0 / (k + 1) ** alpha for k in range(pages)))
    order = list(range(pages))
    rng.shuffle(order)
    total = cum[-1]
    return [order[bisect.bisect_left(cum, rng.random() * total)] for _ in range(n)]


def _heavy(rng: random.Random, p: dict[str, str]) -> list[int]:
    return zipf(rng, _int(p, "n", 100_000), _int(p, "pages", 1000), _float(p, "alpha", 1.0))


def _uniform(rng: random.Random, p: dict[str, str]) -> list[int]:
    n, pages = _int(p, "n", 10_000), _int(p, "pages", 100)
    return [rng.randrange(pages) for _ in range(n)]


def _loop(rng: random.Random, p: dict[str, str]) -> list[int]:
    n, pages = _int(p, "n", 1000), _int(p, "pages", 50)
    return [i % pages for i in range(n)]


def _phases(rng: random.Random, p: dict[str, str]) -> list[int]:
    """Locality phases: each phase draws from its own small working set (Denning)."""
    n, pages = _int(p, "n", 10_000), _int(p, "pages", 200)
    ws, phase = _int(p, "ws", 10), _int(p, "phase", 500)
    out: list[int] = []
    while len(out) < n:
        hot = rng.sample(range(pages), min(ws, pages))
        out.extend(rng.choice(hot) if rng.random() < 0.9 else rng.randrange(pages)
                   for _ in range(phase))
    return out[:n]


WORKLOADS: dict[str, Callable[[random.Random, dict[str, str]], list[int]]] = {
    "heavy": _heavy,
    "uniform": _uniform,
    "loop": _loop,
    "phases": _phases,
}


def make_workload(spec: str, seed: int | None = 0) -> list[int]:
    """The reference string named ``spec`` (``belady``, ``heavy:n=1000,pages=100``...)."""
    name, _, rest = spec.partition(":")
    if name in CLASSIC:
        if rest:
            raise ConfigError(f"workload {name!r} takes no parameters")
        return list(CLASSIC[name])
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}; choose from "
                          f"{', '.join([*CLASSIC, *WORKLOADS])}")
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"workload parameter {item!r} is not key=value")
        params[key.strip()] = value.strip()
    refs = WORKLOADS[name](random.Random(seed), params)
    if params:
        raise ConfigError(f"workload {name!r} has no parameter {', '.join(params)}")
    return refs


def _page(tok: str) -> int:
    try:
        page = int(tok, 0)
    except ValueError:
        raise ConfigError(f"not a page number: {tok[:40]!r}") from None
    if not 0 <= page < MAX_PAGES:
        raise ConfigError(f"page number {page} out of range [0, {MAX_PAGES})")
    return page


def parse_refs(text: str) -> list[int] | list[tuple[int, int]]:
    """Page numbers separated by commas and/or whitespace (``7,0,1`` or one per line),
    or ``pid:page`` pairs (``1:0,2:0,1:3``) for several processes -- not mixed."""
    toks = text.replace(",", " ").split()
    if not toks:
        raise ConfigError("the reference string is empty")
    if not any(":" in t for t in toks):
        return [_page(t) for t in toks]
    pairs = []
    for tok in toks:
        pid, colon, page = tok.partition(":")
        if not colon:
            raise ConfigError(f"{tok!r}: give every reference as pid:page, or none")
        pairs.append((_page(pid), _page(page)))
    return pairs


def load_trace(path: str) -> list[int] | list[tuple[int, int]]:
    """A trace file: page numbers separated by commas/whitespace; ``#`` starts a comment."""
    try:
        with open(path, encoding="utf-8") as f:
            text = "\n".join(line.partition("#")[0] for line in f)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read trace {path!r}: {exc}") from None
    return parse_refs(text)
