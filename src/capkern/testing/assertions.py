"""Assertions and workload helpers for adversarial scenarios."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import errors
from ..domain import ExitStatus
from ..kernel import Kernel
from ..programs import page_pattern
from .attackers import Evidence

__all__ = ["assert_no_plaintext", "assert_no_wrong_reads", "expected_pages", "is_typed_fault",
           "page_pattern_for", "run_workload"]


async def run_workload(kernel: Kernel, program: Any, *args: Any, copies: int = 1,
                       seeds: Iterable[int] | None = None) -> list[ExitStatus]:
    """Spawn ``copies`` of ``program(proc, *args, seed)`` and wait for all of them.

    With ``seeds``, each copy gets its seed appended to ``args``."""
    seed_list = list(seeds) if seeds is not None else [None] * copies
    pids = [kernel.spawn(program, *args, *([] if s is None else [s]), name=f"w{i}")
            for i, s in enumerate(seed_list)]
    return [await kernel.wait(pid) for pid in pids]


def assert_no_wrong_reads(statuses: Iterable[ExitStatus]) -> None:
    """Each process read back exactly what it wrote, or got a typed capkern fault.

    The built-in programs return their count of wrong bytes as exit code."""
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


def assert_no_plaintext(evidence: Evidence, plaintexts: Iterable[bytes]) -> None:
    """No window of any plaintext page reached the untrusted side."""
    assert not evidence.saw_window_of(list(plaintexts)), "plaintext reached the attacker"


def page_pattern_for(program: str, pages: int, seed: int) -> list[bytes]:
    """Every page content the built-in ``program`` (by short name) can write.

    ``sequential``/``phased`` write rounds 0..4; ``random``/``zipf`` write their
    step number as the round, so those are bounded by the step count used in tests."""
    rounds = range(5) if program in ("sequential", "phased") else range(3 * pages + 1)
    return [page_pattern(seed, p, r) for p in range(pages) for r in rounds]


def expected_pages(seed: int, pages: int, rounds: int) -> list[bytes]:
    """The plaintexts ``programs.sequential(pages, rounds, seed)`` writes."""
    return [page_pattern(seed, p, r) for p in range(pages) for r in range(rounds)]
