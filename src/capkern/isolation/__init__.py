"""Untrusted servers in their own OS processes (``boot(isolation="process")``).

The kernel side (proxy, supervisor, framer, ledger) is trusted; :mod:`.child` is what
runs in the untrusted child process.  See ``docs/isolation.md``.
"""

from __future__ import annotations

from ._proxy import IsolationOptions, RestartPolicy, harden_kernel_process, spawn_isolated
from ._spec import ServerSpec

__all__ = ["IsolationOptions", "RestartPolicy", "ServerSpec", "harden_kernel_process",
           "spawn_isolated"]
