"""What kernel code needs of the kernel and of a domain, as Protocols (type-only seams).

IPC, the syscall handle and the fault path's ports run on a domain's behalf and touch a
few things of the kernel (limits, counters, the IPC trace, the event log) and of the
domain (its CSpace, quota usage, pending reply).  They name those through these
Protocols rather than importing :class:`~capkern.kernel.Kernel` and
:class:`~capkern._domain.Domain`, which import them: the import graph stays acyclic
(``tests/test_import_graph.py``) and each module says exactly what it relies on.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._trace import Counters, IpcTrace
from ._wire import Limits

__all__ = ["KernelView"]


class KernelView(Protocol):
    """The kernel as domains' syscalls see it (:class:`~capkern.kernel.Kernel` is one)."""

    limits: Limits
    stats: Counters
    trace: IpcTrace
    boot_time: float

    @property
    def vm(self) -> Any:
        """The paging subsystem (a ``capkern.mmu._vm.VM``), or None with paging off."""

    def event(self, kind: str, dom: Any, detail: str = "") -> None:
        """Record a kernel event about domain ``dom``."""
