"""Which sealed pages died with a pager process (sans-IO, trusted, kept by the proxy).

The proxy of an out-of-process pager sees every request it relays.  It notes each page
handle the pager confirmed storing; when the pager's process (or the block device it
stores into) dies, every page it held is *lost*: a later fetch of one is answered by
the proxy itself with the typed ``lost`` error (the kernel raises
:class:`~capkern.errors.PageLost` to that page's owner only) instead of asking a fresh
pager that never heard of it.  A page stored again after the restart, or discarded, is
no longer lost.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PageLedger"]


class PageLedger:
    """Handles stored by the current pager incarnation, and those lost with earlier ones."""

    def __init__(self) -> None:
        self.stored: set[int] = set()
        self.lost: set[int] = set()
        self.incarnation = 0

    def request(self, label: str, body: Any) -> str | None:
        """Before a request is relayed: the error detail if the proxy answers it itself."""
        if label == "fetch" and isinstance(body, dict) and body.get("handle") in self.lost:
            return (f"its sealed copy died with pager incarnation "
                    f"{self.incarnation - 1} or earlier")
        if label == "discard" and isinstance(body, dict):
            for handle in body.get("handles") or ():
                self.lost.discard(handle)
                self.stored.discard(handle)
        return None

    def replied(self, request: str, label: str, body: Any) -> None:
        """After the pager answered ``request`` with ``label``/``body``."""
        if request == "store" and label == "ok" and isinstance(body, dict):
            for handle in body.get("stored") or ():
                if isinstance(handle, int):
                    self.stored.add(handle)
                    self.lost.discard(handle)

    def crashed(self) -> int:
        """The pager (or its disk) died: everything it held is lost.  Returns how many."""
        n = len(self.stored)
        self.lost |= self.stored
        self.stored = set()
        self.incarnation += 1
        return n
