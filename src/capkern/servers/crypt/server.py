"""The sealer's domain program (TRUSTED): serves the CRYPT contract.

The key is generated inside this domain at boot and never leaves it: no operation of
the contract returns it.  Batches let the kernel seal or unseal many pages in one hop.
"""

from __future__ import annotations

from typing import Any

from ...proc import Process
from ._sealer import Binding, Sealer, SealerExhausted, SealError

__all__ = ["crypt_server"]


async def crypt_server(proc: Process, cipher: str, boot_id: bytes) -> None:
    """Serve seal/unseal/stats on the ``service`` endpoint until killed."""
    sealer = Sealer(cipher)
    unseals = refused = 0
    msg = await proc.recv("service")
    while True:
        label, body = msg.label, msg.body
        reply: Any = None
        if label == "seal":
            try:
                blobs = sealer.seal_many(
                    [(Binding(boot_id, *b), p) for b, p in body["pages"]])
                reply = {"blobs": blobs}
            except SealerExhausted as exc:
                proc.reply_error("exhausted", str(exc))
                msg = await proc.recv("service")
                continue
        elif label == "unseal":
            results = sealer.unseal_many([(Binding(boot_id, *b), blob)
                                          for b, blob in body["pages"]])
            unseals += len(results)
            failed = sum(isinstance(r, SealError) for r in results)
            refused += failed
            reply = {"plain": [b"" if isinstance(r, SealError) else r for r in results],
                     "ok": [0 if isinstance(r, SealError) else 1 for r in results]}
        elif label == "stats":
            reply = {"cipher": sealer.cipher, "seals": sealer.seals, "unseals": unseals,
                     "refused": refused}
        msg = await proc.reply_recv("service", "ok", reply)
