"""Wiring ``boot(isolation="process")``: the pager and block device become proxies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._proxy import IsolationOptions, ServerGroup, isolated

if TYPE_CHECKING:
    from .._config import BootConfig

__all__ = ["isolate_servers"]


def isolate_servers(cfg: BootConfig, pager: Any, blockdev: Any) -> tuple[Any, Any]:
    """Proxy programs running ``pager`` and ``blockdev`` in child OS processes, sharing
    one :class:`ServerGroup` (so a dying disk's pages are known lost to the pager).
    A ``tcp://HOST:PORT`` pager is a remote one (in either mode); the block device then
    stays where ``cfg.isolation`` puts it (the remote pager uses its own)."""
    options = cfg.isolation_options if cfg.isolation_options is not None \
        else IsolationOptions()
    if not isinstance(options, IsolationOptions):
        raise ConfigError(f"isolation_options must be IsolationOptions, not {options!r}")
    group = ServerGroup()
    if cfg.isolation == "process":
        blockdev = isolated(blockdev, "blockdev", options, group, cfg.limits,
                            cfg.pager_deadline)
    return isolated(pager, "pager", options, group, cfg.limits, cfg.pager_deadline), blockdev
