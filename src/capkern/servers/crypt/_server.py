"""The sealer's domain program (TRUSTED): serves the CRYPT contract.

The key is generated inside this domain at boot and never leaves it: no operation of
the contract returns it.  Batches let the kernel seal or unseal many pages in one hop.
"""

from __future__ import annotations

from typing import Any

from ... import _serverloop as serverloop
from ..._proc import Process
from ._sealer import Binding, Sealer, SealerExhausted, SealError

__all__ = ["CryptServer", "crypt_server"]


class CryptServer:
    """The sealer behind the CRYPT contract: its handlers and counters.

    ``seal`` and ``unseal`` work on batches, so the kernel seals or unseals many pages
    in one hop; ``unseal`` answers per page (a refused page does not fail the others).
    """

    ERRORS: serverloop.ErrorMap = ((SealerExhausted, "exhausted"),)

    def __init__(self, cipher: str, boot_id: bytes) -> None:
        self.sealer = Sealer(cipher)
        self.boot_id = boot_id
        self.unseals = 0
        self.refused = 0

    def handlers(self) -> serverloop.Table:
        return {"seal": self.on_seal, "unseal": self.on_unseal, "stats": self.on_stats}

    async def on_seal(self, body: Any) -> Any:
        boot_id = self.boot_id
        return {"blobs": self.sealer.seal_many([(Binding(boot_id, *b), p)
                                                for b, p in body["pages"]])}

    async def on_unseal(self, body: Any) -> Any:
        # Sealer.unseal_many's loop, building the reply as it goes (one pass per batch)
        boot_id = self.boot_id
        unseal = self.sealer.unseal
        bindings = [Binding(boot_id, *b) for b, _blob in body["pages"]]  # all, first
        plain: list[bytes] = []
        ok: list[int] = []
        for binding, (_b, blob) in zip(bindings, body["pages"], strict=True):
            try:
                plain.append(unseal(binding, blob))
                ok.append(1)
            except SealError:
                plain.append(b"")
                ok.append(0)
        self.unseals += len(ok)
        self.refused += len(ok) - sum(ok)
        return {"plain": plain, "ok": ok}

    async def on_stats(self, body: Any) -> Any:
        return {"cipher": self.sealer.cipher, "seals": self.sealer.seals,
                "unseals": self.unseals, "refused": self.refused}


async def crypt_server(proc: Process, cipher: str, boot_id: bytes) -> None:
    """Serve seal/unseal/stats on the ``service`` endpoint until killed."""
    server = CryptServer(cipher, boot_id)
    await serverloop.serve(proc, server.handlers(), errors=CryptServer.ERRORS)
