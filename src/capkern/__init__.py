"""capkern: a capability-based IPC microkernel, built as a Trio service mesh.

The kernel, an untrusted external pager, a block device and a trusted crypto sealer
each run as a Trio task in their own protection domain and talk only through
capability-checked msgpack channels.  Every page is sealed (encrypted and MACed, bound
to its place and version) before the pager sees it.

Public surface::

    async with capkern.boot(ram_pages=64) as kernel:
        pid = kernel.spawn(program, arg, name="p1", caps={"svc": ep})
        status = await kernel.wait(pid)
"""

from ._config import BootConfig, Grant, Program, RootCap
from ._contract import Contract, Op
from ._cspace import CapInfo, Rights
from ._domain import DomainInfo, ExitStatus
from ._insecure import InsecureWarning
from ._ipc import Received
from ._proc import Process
from ._quota import Quota
from ._root import boot
from ._wire import Limits
from .errors import *  # noqa: F403 -- the error hierarchy is public API
from .errors import __all__ as _errors_all
from .kernel import Kernel

__version__ = "0.1.0"

__all__ = [
    "BootConfig",
    "CapInfo",
    "Contract",
    "DomainInfo",
    "ExitStatus",
    "Grant",
    "InsecureWarning",
    "Kernel",
    "Limits",
    "Op",
    "Process",
    "Program",
    "Quota",
    "Received",
    "Rights",
    "RootCap",
    "boot",
    *_errors_all,
]
