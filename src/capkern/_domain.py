"""Protection domains as the kernel records them (kernel memory only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ._cspace import CSpace
from ._ipcobj import ReplyObject
from ._quota import Quota, Usage
from ._states import DomainState, ReplyState

if TYPE_CHECKING:
    from ._ipcobj import _Receiver
    from ._services import KernelView
    from .mmu._aspace import AddressSpace

__all__ = ["Domain", "DomainInfo", "ExitStatus"]


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a domain ended.  ``state`` is ``exited``, ``failed`` or ``killed`` (a
    :class:`~capkern._states.DomainState`, equal to those words)."""

    pid: int
    name: str
    state: str
    code: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        # a typo'd state is refused at construction; a plain word becomes the enum
        object.__setattr__(self, "state", DomainState(self.state))

    @property
    def ok(self) -> bool:
        return self.state == DomainState.EXITED and self.code == 0


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """One row of ``kernel.domains()``.  ``usage`` is ``{resource: (used, limit)}``
    against the domain's quota (see :mod:`capkern._quota`)."""

    pid: int
    name: str
    kind: str
    state: str
    caps: int
    resident_pages: int
    swapped_pages: int
    faults: int
    integrity_faults: int
    exit: ExitStatus | None
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    isolation: str = "task"  # "task" (in the kernel's process) or "process" (a child)
    os_pid: int | None = None  # the OS process running the domain's code
    restarts: int = 0  # times its process was restarted by the supervisor
    frames_refused: int = 0  # garbage frames its process sent
    quarantined: bool = False  # a pager of a set that failed integrity checks


class Domain:
    """A protection domain: a CSpace, an optional address space, one program task."""

    def __init__(self, kernel: KernelView, pid: int, name: str, kind: str, cspace_size: int,
                 quota: Quota | None = None) -> None:
        self.kernel = kernel
        self.pid = pid
        self.name = name
        self.kind = kind  # "process" | "server" | "kernel"
        #: what this domain holds against its quota (charged before anything is made)
        self.usage = Usage(quota if quota is not None else Quota(), name)
        self.cspace = CSpace(name, pid, cspace_size, self.usage)
        self.reply: ReplyObject | None = None
        #: a receiver record its last blocking receive used, to fill in for the next
        self.spare: _Receiver | None = None
        self.in_place_run = 0  # its calls answered in place in a row (capkern._inplace)
        self.state = DomainState.STARTING
        self.exit: ExitStatus | None = None
        self.done = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self.aspace: AddressSpace | None = None
        self.faults = 0
        self.integrity_faults = 0
        self.quarantined = False  # a pager set no longer asks it (pagerset/_port.py)
        self.program: Any = None
        self.isolation = "task"  # set to "process" by an out-of-process server's proxy
        self.os_pid: int | None = None
        self.restarts = 0
        self.frames_refused = 0

    def set_reply(self, reply: ReplyObject) -> None:
        """Fill the implicit caller slot; a still-waiting previous caller is aborted."""
        old = self.reply
        if old is not None and old.state == ReplyState.WAITING:
            old.abort(f"server {self.name!r} received again without replying")
        self.reply = reply

    def take_reply(self) -> ReplyObject | None:
        reply, self.reply = self.reply, None
        return reply

    @property
    def alive(self) -> bool:
        return self.exit is None

    def __repr__(self) -> str:
        return f"<Domain pid={self.pid} {self.name!r} {self.kind} {self.state}>"
