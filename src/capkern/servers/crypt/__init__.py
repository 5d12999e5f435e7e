"""The TRUSTED sealer: keys, AEAD seal/unseal of pages bound to their place and version."""

from ._sealer import CIPHERS, Binding, Sealer, SealerExhausted, SealError

__all__ = ["CIPHERS", "Binding", "SealError", "Sealer", "SealerExhausted"]
