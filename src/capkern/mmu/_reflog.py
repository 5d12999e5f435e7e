"""Precise reference reporting and seeded page handles (trusted, sans-IO).

Two small pieces of kernel state the fault path (``_vm.py``) consults, kept here so the
fault path itself stays small:

* :class:`ReferenceLog` -- *precise mode* (``boot(precise=True)``).  Normally the pager
  learns only which pages were referenced *since the last eviction* (the accessed bits the
  kernel harvests), which is all real hardware offers and makes LRU approximate.  In
  precise mode the kernel also appends the page handle of every reference, in order, to
  this log and hands the log to the pager with its next request, so a policy can run
  exact LRU or LFU.  **Cost**: one list append per page touched by a read or write, and
  every reference crosses to the pager (4-9 msgpack bytes each): O(references) kernel
  work and IPC volume instead of O(resident pages) per eviction.  The pager learns the
  reference *order* of opaque handles -- nothing about contents, pids or addresses.

* *Oracle mode* (offline, the simulator only): when a batched access syscall is given
  ``future=True`` the kernel, which alone knows vpn -> handle, attaches to each logged
  reference the position of the **next** reference to the same page within that batch
  (:data:`NEVER` if there is none).  That is exactly what Belady's MIN needs, expressed
  in the handles the pager already sees, and only for pages it is told about; a normal
  boot never computes or sends it.

* :class:`HandleSource` -- opaque page handles.  Random (``secrets``) by default, so a
  handle reveals no pid or address and differs per boot; with ``boot(seed=...)`` they
  are derived from the seed (a keyed BLAKE2b of a counter), so a whole run -- policy
  choices that depend on handle values included -- is reproducible.  Handles stay
  opaque to the pager either way: it does not know the seed.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Container, Sequence

__all__ = ["NEVER", "HandleSource", "ReferenceLog", "next_uses"]

NEVER = (1 << 63) - 1  # "no further reference" in an oracle's next-use positions


def next_uses(keys: Sequence[object]) -> list[int]:
    """For each position ``i``, the next position ``j > i`` with ``keys[j] == keys[i]``,
    or :data:`NEVER`.  One backward pass: O(n)."""
    out = [NEVER] * len(keys)
    fill_next_uses(keys, out, {}, 0, len(keys))
    return out


def fill_next_uses(keys: Sequence[object], out: list[int], seen: dict[object, int],
                   lo: int, hi: int) -> None:
    """One step of :func:`next_uses`: positions ``hi-1`` down to ``lo`` (call with
    descending ranges, sharing ``out`` and ``seen``, so a long list can go in steps)."""
    for i in range(hi - 1, lo - 1, -1):
        key = keys[i]
        out[i] = seen.get(key, NEVER)
        seen[key] = i


class ReferenceLog:
    """The ordered references of precise mode, waiting to be reported to the pager.

    ``refs`` holds handles; ``future`` holds, for the same positions, the next-use
    position when the reference came from an oracle batch (else :data:`NEVER`).
    ``oracle`` says whether any entry carries real next-use information, so a normal
    precise boot never sends the field.  ``limit`` bounds one report (the PAGER
    contract's list bound): when the log reaches it the kernel flushes it early.
    """

    __slots__ = ("_source", "_tags", "clock", "future", "limit", "oracle", "refs")

    def __init__(self, limit: int, source: HandleSource) -> None:
        self.limit = limit
        self._source = source
        self._tags: dict[object, int] = {}  # address space -> its opaque space tag
        self.clock = 0  # oracle batches so far have covered positions [0, clock)
        self.refs: list[int] = []
        self.future: list[int] = []
        self.oracle = False

    def note(self, handle: int, next_use: int = NEVER) -> None:
        self.refs.append(handle)
        self.future.append(next_use)

    @property
    def full(self) -> bool:
        return len(self.refs) >= self.limit

    def take(self) -> tuple[list[int], list[int] | None]:
        """Hand over (and clear) the log: references, and next uses if an oracle ran."""
        refs, future, oracle = self.refs, self.future, self.oracle
        self.refs, self.future, self.oracle = [], [], False
        return refs, (future if oracle else None)

    def tag(self, space: object) -> int:
        """The opaque tag of an address space (drawn like a handle: random or seeded).

        Precise mode tells the pager which pages share an address space, and which
        space a fault is for, so frame-allocation policies (working set, page-fault
        frequency, local replacement) are possible.  It reveals grouping only: no pid,
        asid or address; a new incarnation gets a new tag."""
        tag = self._tags.get(space)
        if tag is None:
            tag = self._tags[space] = self._source.new(set(self._tags.values()))
        return tag

    def drop_space(self, space: object) -> None:
        self._tags.pop(space, None)

    def forget(self, dead: Container[int]) -> None:
        """Drop references to pages that were unmapped (the pager is told to discard
        them; it must not hear of them again)."""
        keep = [i for i, h in enumerate(self.refs) if h not in dead]
        if len(keep) != len(self.refs):
            self.refs = [self.refs[i] for i in keep]
            self.future = [self.future[i] for i in keep]


class HandleSource:
    """Fresh opaque page handles: random, or derived from a boot seed (reproducible)."""

    __slots__ = ("_counter", "_key", "rng")

    def __init__(self, seed: int | None) -> None:
        self._key = None if seed is None else hashlib.blake2b(
            str(seed).encode(), digest_size=32, person=b"capkern-handles").digest()
        self._counter = 0
        #: the order of shuffled reports and discard batches: the OS's CSPRNG, or on a
        #: seeded boot a PRNG under the seed, so a seeded run's counts repeat exactly
        self.rng: random.Random = secrets.SystemRandom() if self._key is None \
            else random.Random(self._key)

    @property
    def seeded(self) -> bool:
        return self._key is not None

    def new(self, taken: Container[int]) -> int:
        """A handle in [1, 2**63) not in ``taken``."""
        while True:
            if self._key is None:
                handle = secrets.randbits(63)
            else:
                self._counter += 1
                digest = hashlib.blake2b(self._counter.to_bytes(8, "little"), key=self._key,
                                         digest_size=8).digest()
                handle = int.from_bytes(digest, "little") >> 1
            if handle and handle not in taken:
                return handle
