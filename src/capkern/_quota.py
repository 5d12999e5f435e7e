"""Per-domain quotas: every kernel object is charged to the domain that caused it.

seL4 makes user space pay for kernel memory with untyped capabilities; capkern keeps the
spirit with plain accounting.  Each domain gets a :class:`Quota` at spawn (the boot
default, or ``spawn(quota=...)``) and a :class:`Usage` that the kernel charges before it
creates anything and releases when the thing goes away.  A charge that would pass the
limit raises :class:`~capkern.errors.QuotaExceeded` and changes nothing.

Sans-IO: plain data, no kernel references.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError, QuotaExceeded

__all__ = ["RESOURCES", "Quota", "Usage"]

RESOURCES = ("pages", "objects", "slots", "spawns", "queued")
"""What is charged: virtual pages mapped, kernel objects created (endpoints and
notifications), CSpace slots filled, domains spawned, messages blocked in send."""


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits of one domain.  The defaults are generous for programs and still keep one
    domain from exhausting the kernel."""

    pages: int = 1 << 18  # 1 GiB of virtual memory
    objects: int = 4096
    slots: int = 4096
    spawns: int = 256
    queued: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ConfigError(f"quota {f.name} must be an int >= 0, not {value!r}")

    @classmethod
    def unlimited(cls) -> Quota:
        """The root task's quota: it owns the machine."""
        big = 1 << 62
        return cls(**{name: big for name in RESOURCES})

    @classmethod
    def coerce(cls, value: Quota | dict[str, Any] | None, default: Quota) -> Quota:
        """``None`` -> the default; a dict overrides fields of the default."""
        if value is None:
            return default
        if isinstance(value, Quota):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(RESOURCES)
            if unknown:
                raise ConfigError(f"unknown quota resource(s) {sorted(unknown)}; "
                                  f"known: {', '.join(RESOURCES)}")
            merged = {name: getattr(default, name) for name in RESOURCES}
            merged.update(value)
            return cls(**merged)
        raise ConfigError(f"quota must be a capkern Quota or a dict, not {value!r}")


class Usage:
    """What one domain holds now, against its :class:`Quota`."""

    __slots__ = ("owner", "quota", *RESOURCES)

    def __init__(self, quota: Quota, owner: str = "") -> None:
        self.quota = quota
        self.owner = owner
        self.pages = self.objects = self.slots = self.spawns = self.queued = 0

    def check(self, resource: str, n: int = 1) -> None:
        """Raise :class:`QuotaExceeded` if charging ``n`` more would pass the limit."""
        used: int = getattr(self, resource)
        limit: int = getattr(self.quota, resource)
        if used + n > limit:
            raise QuotaExceeded(resource, limit, used, n, self.owner)

    def charge(self, resource: str, n: int = 1) -> None:
        """Check, then charge: all or nothing."""
        self.check(resource, n)
        setattr(self, resource, getattr(self, resource) + n)

    def release(self, resource: str, n: int = 1) -> None:
        setattr(self, resource, max(0, getattr(self, resource) - n))

    def queue(self) -> None:
        """``charge("queued")`` without looking the resource up by name: a blocked send
        is the common case at scale (the server is busy when the kernel calls it)."""
        if self.queued >= self.quota.queued:
            self.check("queued")  # raises, naming the resource
        self.queued += 1

    def unqueue(self) -> None:
        """``release("queued")``, likewise."""
        if self.queued > 0:
            self.queued -= 1

    def as_dict(self) -> dict[str, tuple[int, int]]:
        """``{resource: (used, limit)}``, for ``ps()`` and ``dump()``."""
        return {name: (getattr(self, name), getattr(self.quota, name)) for name in RESOURCES}
