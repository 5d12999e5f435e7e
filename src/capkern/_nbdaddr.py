"""NBD addresses: parse ``nbd://HOST[:PORT][/EXPORT]`` and ``nbd+unix:///EXPORT?socket=PATH``.

Pure string handling with no I/O, so that boot can refuse a malformed ``--blockdev``
before any domain starts (kernel side) and the NBD backend (untrusted side) connects to
exactly what boot accepted.  The forms follow the NBD URI convention (``nbd://`` for
TCP, default port 10809; ``nbd+unix://`` with the socket path as a query parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ConfigError

__all__ = ["DEFAULT_PORT", "NBDAddress", "is_nbd_spec", "parse_nbd_spec"]

DEFAULT_PORT = 10809
_MAX_NAME = 4096  # the protocol's limit on an export name (bytes of UTF-8)


@dataclass(frozen=True)
class NBDAddress:
    """Where an NBD server listens and which export to open.

    Exactly one of ``host`` (with ``port``) and ``socket_path`` is set.
    """

    export: str = ""
    host: str | None = None
    port: int = DEFAULT_PORT
    socket_path: str | None = None

    def __str__(self) -> str:
        if self.socket_path is not None:
            return f"nbd+unix:///{self.export}?socket={self.socket_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"nbd://{host}:{self.port}/{self.export}"


def is_nbd_spec(spec: object) -> bool:
    """True if ``spec`` names an NBD device (it may still be malformed)."""
    return isinstance(spec, str) and (spec.startswith("nbd://") or spec.startswith("nbd+unix://"))


def parse_nbd_spec(spec: str) -> NBDAddress:
    """The address in ``spec``, or :class:`ConfigError` saying what is wrong with it."""
    if not is_nbd_spec(spec):
        raise ConfigError(f"{spec!r} is not an nbd:// or nbd+unix:// address")
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad NBD address {spec!r}: {exc}") from None
    if parts.fragment or parts.username or parts.password:
        raise ConfigError(f"bad NBD address {spec!r}: no user, password or #fragment allowed")
    export = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if len(export.encode()) > _MAX_NAME or "\x00" in export:
        raise ConfigError(f"bad NBD export name in {spec!r}")
    if parts.scheme == "nbd+unix":
        query = parse_qs(parts.query, keep_blank_values=True)
        sockets = query.pop("socket", [])
        if parts.netloc or query or len(sockets) != 1 or not sockets[0]:
            raise ConfigError(
                f"bad NBD address {spec!r}: use nbd+unix:///EXPORT?socket=PATH")
        return NBDAddress(export=export, socket_path=sockets[0])
    if parts.query or not parts.hostname:
        raise ConfigError(f"bad NBD address {spec!r}: use nbd://HOST[:PORT][/EXPORT]")
    if port == 0:
        raise ConfigError(f"bad NBD address {spec!r}: port 0")
    return NBDAddress(export=export, host=parts.hostname,
                      port=DEFAULT_PORT if port is None else port)
