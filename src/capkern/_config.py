"""Boot configuration: :class:`BootConfig` and how the root names capabilities.

One source for every boot option and its check (the CLI and the REPL reuse
:meth:`BootConfig.validate`).  Plain data: nothing here starts or touches a domain.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import _wire as wire
from ._cspace import Rights
from ._nbdaddr import is_nbd_spec, parse_nbd_spec
from ._quota import Quota
from .errors import ConfigError

__all__ = ["BootConfig", "Grant", "Program", "RootCap"]

Program = Callable[..., Awaitable[Any]]
"""A program: ``async def main(proc: Process, *args) -> int | None``."""


@dataclass(frozen=True, slots=True)
class RootCap:
    """A capability held by the root (the code that booted the kernel), by slot."""

    slot: int
    label: str

    def __repr__(self) -> str:
        return f"<RootCap slot={self.slot} {self.label}>"


@dataclass(frozen=True, slots=True)
class Grant:
    """Give a spawned domain a capability derived from ``cap`` with these rights/badge."""

    cap: RootCap
    rights: str | Rights = Rights.ALL
    badge: int | None = None


@dataclass(frozen=True)
class BootConfig:
    """Boot options.  The defaults are the embedded configuration (demo and REPL).

    ``evict_batch`` pages are evicted per eviction (default 8): faster, but the fault
    counts differ from textbook one-page replacement (``capkern sim`` uses 1); a batch
    larger than RAM evicts every resident page (warned about when given explicitly).
    ``seed`` makes page handles, and so every policy choice, reproducible; ``precise``
    reports every reference to the pager in order (exact LRU/LFU; see ``mmu/_reflog.py``).
    """

    ram_pages: int = 256
    policy: str = "clock"
    blockdev: str = "memory"
    swap_blocks: int = 8192
    blockdev_latency: float = 0.0
    cipher: str = "aes-256-gcm"
    pager: Program | str | None = None  # a program, or "tcp://HOST:PORT" (remote)
    blockdev_server: Program | None = None
    pager_deadline: float = 2.0
    crypt_deadline: float = 5.0
    evict_batch: int = 8
    readahead: int = 0  # swapped pages fetched with a sequential page-in (0: off)
    limits: wire.Limits = field(default_factory=wire.Limits)
    cspace_size: int = 4096
    trace: bool = False
    paging: bool = True
    quota: Quota = field(default_factory=Quota)  # each spawned domain's default quota
    seed: int | None = None  # derive page handles from it: reproducible runs (see reflog)
    precise: bool = False  # report every reference, in order, to the pager (exact LRU/LFU)
    #: where untrusted servers run: "task" (in this process) or "process" (children)
    isolation: str = "task"
    isolation_options: Any = None  # a capkern.isolation.IsolationOptions, or None
    #: a pager set (see capkern.pagerset._port): several pagers, each with its own block
    #: device; ``pager_set`` "mirror" keeps ``copies`` of each page, "erasure" splits it
    #: into one shard per pager, any ``needed`` of which rebuild it
    pagers: tuple[Program | str, ...] | None = None
    pager_set: str = "mirror"
    copies: int = 2
    needed: int | None = None
    hedge_delay: float = 0.05  # a pager set asks another member after this much silence

    def validate(self) -> None:
        """Refuse a bad option with a :class:`ConfigError` before anything starts."""

        def count(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if type(value) is not int or value < minimum:
                raise ConfigError(f"{name} must be an int >= {minimum}, not {value!r}")

        def seconds(name: str, positive: bool) -> None:
            value = getattr(self, name)
            ok = (
                type(value) in (int, float)
                and math.isfinite(value)
                and (value > 0 if positive else value >= 0)
            )
            if not ok:
                what = "a positive" if positive else "a non-negative"
                raise ConfigError(f"{name} must be {what} finite number, not {value!r}")

        count("ram_pages", 1)
        count("evict_batch", 1)
        count("readahead", 0)
        count("swap_blocks", 2)
        count("cspace_size", 1)
        seconds("pager_deadline", True)
        seconds("crypt_deadline", True)
        seconds("blockdev_latency", False)
        if self.seed is not None and type(self.seed) is not int:
            raise ConfigError(f"seed must be an int or None, not {self.seed!r}")
        if type(self.precise) is not bool:
            raise ConfigError(f"precise must be a bool, not {self.precise!r}")
        if self.paging and self.evict_batch > self.ram_pages \
                and self.evict_batch != BootConfig.evict_batch:
            # (the default batch of 8 on a tiny RAM is documented, not warned about)
            warnings.warn(f"evict_batch={self.evict_batch} exceeds ram_pages="
                          f"{self.ram_pages}: each eviction empties RAM", stacklevel=4)
        if self.isolation not in ("task", "process"):
            raise ConfigError(f"isolation must be 'task' or 'process', not {self.isolation!r}")
        if not isinstance(self.policy, str):
            raise ConfigError(f"policy must be a str, not {self.policy!r}")
        if self.cipher not in ("aes-256-gcm", "chacha20-poly1305", "null"):
            raise ConfigError(f"unknown cipher {self.cipher!r}")
        if not isinstance(self.quota, Quota):
            raise ConfigError(f"quota must be a capkern Quota, not {self.quota!r}")
        if not isinstance(self.limits, wire.Limits):
            raise ConfigError(f"limits must be a capkern.Limits, not {self.limits!r}")
        for name in ("pager", "blockdev_server"):
            value = getattr(self, name)
            if name == "pager" and isinstance(value, str) and value.startswith("tcp://"):
                continue  # a remote pager (checked with the paging options)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be a program (async function), not {value!r}")
        if self.pagers is not None:
            self._check_pager_set()
        if self.blockdev_server is None and is_nbd_spec(self.blockdev):
            parse_nbd_spec(self.blockdev)  # a malformed address is a ConfigError now
        elif self.blockdev_server is None and not (
            isinstance(self.blockdev, str)
            and (self.blockdev == "memory" or (self.blockdev.startswith("file:")
                                               and self.blockdev[5:]))
        ):
            raise ConfigError(f"blockdev must be 'memory', 'file:PATH' or "
                              f"'nbd://HOST:PORT[/EXPORT]', not {self.blockdev!r}")
        if self.paging and self.blockdev_server is None and self.blockdev.startswith("file:"):
            _check_swap_path(self.blockdev[5:])

    def _check_pager_set(self) -> None:
        members = self.pagers
        if not isinstance(members, tuple | list) or not members:
            raise ConfigError(f"pagers must be a non-empty list of pager programs or "
                              f"'tcp://HOST:PORT' addresses, not {members!r}")
        if self.pager is not None:
            raise ConfigError("give either pager= or pagers=, not both")
        for member in members:
            remote = isinstance(member, str) and member.startswith("tcp://")
            if not remote and not callable(member):
                raise ConfigError(f"a pager of the set must be a program or a tcp:// "
                                  f"address, not {member!r}")
        n = len(members)
        if self.pager_set == "mirror":
            if type(self.copies) is not int or not 1 <= self.copies <= n:
                raise ConfigError(f"copies must be an int in 1..{n}, not {self.copies!r}")
        elif self.pager_set == "erasure":
            if type(self.needed) is not int or not 1 <= self.needed <= n:
                raise ConfigError(f"needed must be an int in 1..{n} for an erasure-coded "
                                  f"set, not {self.needed!r}")
        else:
            raise ConfigError(f"pager_set must be 'mirror' or 'erasure', not "
                              f"{self.pager_set!r}")
        hedge = self.hedge_delay
        if not (type(hedge) in (int, float) and math.isfinite(hedge) and hedge > 0):
            raise ConfigError(f"hedge_delay must be a positive finite number, not {hedge!r}")


def _check_swap_path(path: str) -> None:
    """The default block device will create (or overwrite) a swap file at ``path``: refuse
    at boot a path where it cannot, rather than let the device die once domains run."""
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"swap file {path!r} is a directory")
    if not os.path.isdir(where):
        raise ConfigError(f"swap file {path!r}: directory {where!r} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"swap file {path!r} is not readable and writable")
    elif not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"swap file {path!r}: cannot create files in {where!r}")
