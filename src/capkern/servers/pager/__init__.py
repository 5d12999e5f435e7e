"""The external pager and its replacement policies (UNTRUSTED).

To prototype a page replacement policy, subclass :class:`ReplacementPolicy` and boot
with ``capkern.boot(pager=make_pager(MyPolicy))``.  The policy runs inside the untrusted
pager domain: it sees opaque page handles and the referenced/dirty bits the kernel
harvests, never page contents, and a bad choice costs speed only.
"""

from ._alloc import LocalLRUPolicy, PFFPolicy, WorkingSetPolicy
from ._exact import NEVER, LFUPolicy, MRUPolicy, OPTPolicy
from ._policy import (
    POLICIES,
    ClockPolicy,
    FIFOPolicy,
    LRUPolicy,
    RandomPolicy,
    ReplacementPolicy,
    make_policy,
)
from ._remote import serve_pager
from ._server import Pager, make_pager, pager_server

__all__ = [
    "NEVER",
    "POLICIES",
    "ClockPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "LocalLRUPolicy",
    "MRUPolicy",
    "OPTPolicy",
    "PFFPolicy",
    "Pager",
    "RandomPolicy",
    "ReplacementPolicy",
    "make_pager",
    "make_policy",
    "WorkingSetPolicy",
    "pager_server",
    "serve_pager",
]
