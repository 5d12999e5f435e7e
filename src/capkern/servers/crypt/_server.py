"""The sealer's domain program (TRUSTED): serves the CRYPT contract.

The key is generated inside this domain at boot and never leaves it: no operation of
the contract returns it.  Batches let the kernel seal or unseal many pages in one hop.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

from ... import _serverloop as serverloop
from ..._proc import Process
from ._sealer import (
    _AD,
    _AD_PREFIX,
    BOOT_ID_LEN,
    Sealer,
    SealerExhausted,
    SealError,
    associated_data,
)

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
        # seal and unseal answer at once: the server loop calls them with no coroutine
        now = serverloop.immediate
        return {"seal": now(self.seal), "unseal": now(self.unseal), "stats": self.on_stats}

    async def on_seal(self, body: Any) -> Any:
        return self.seal(body)

    async def on_unseal(self, body: Any) -> Any:
        return self.unseal(body)

    def seal(self, body: Any) -> Any:
        """The ``seal`` request's ``ok`` reply: each page sealed to its binding."""
        # Sealer.seal_many without its Binding objects: each page's associated data is
        # packed straight from the request's (asid, incarnation, vpn, version), with no
        # Python call per page besides the seal; a field out of range (or a boot id of
        # the wrong size) takes the checked path, which raises associated_data's error
        boot_id, seal = self.boot_id, self.sealer.seal_ad
        pages = body["pages"]
        try:
            if len(boot_id) != BOOT_ID_LEN:
                raise struct.error("boot id size")
            pack = partial(_AD.pack, _AD_PREFIX, boot_id)
            ads = [pack(*place) for place, _plain in pages]
        except struct.error:
            ads = [associated_data(boot_id, *place) for place, _plain in pages]
        return {"blobs": [seal(ad, page[1]) for ad, page in zip(ads, pages, strict=True)]}

    def unseal(self, body: Any) -> Any:
        """The ``unseal`` request's ``ok`` reply: per page, its plaintext or a refusal."""
        # Sealer.unseal_many's loop, building the reply as it goes (one pass per batch);
        # a refused page answers ok=0 and no plaintext, never what failed to authenticate.
        # The associated data is packed as seal packs it (no call of ours per page); a
        # field out of range, or a boot id of the wrong size, takes associated_data,
        # which raises its error
        boot_id, unseal = self.boot_id, self.sealer.unseal_ad
        fast = len(boot_id) == BOOT_ID_LEN
        plain: list[bytes] = []
        ok: list[int] = []
        for place, blob in body["pages"]:
            try:
                try:
                    ad = _AD.pack(_AD_PREFIX, boot_id, *place) if fast \
                        else associated_data(boot_id, *place)
                except struct.error:
                    ad = associated_data(boot_id, *place)
                plain.append(unseal(ad, blob))
                ok.append(1)
            except SealError:
                plain.append(b"")
                ok.append(0)
                self.refused += 1
        self.unseals += len(ok)
        return {"plain": plain, "ok": ok}

    async def on_stats(self, body: Any) -> Any:
        return {"cipher": self.sealer.cipher, "seals": self.sealer.seals,
                "unseals": self.unseals, "refused": self.refused}


async def crypt_server(proc: Process, cipher: str, boot_id: bytes) -> None:
    """Serve seal/unseal/stats on the ``service`` endpoint until killed."""
    server = CryptServer(cipher, boot_id)
    await serverloop.serve(proc, server.handlers(), errors=CryptServer.ERRORS)
