"""The TRUSTED sealer: keys, AEAD seal/unseal of pages bound to their place and version."""

from ._sealer import CIPHERS, Binding, Sealer, SealerExhausted, SealError
from ._server import crypt_server

__all__ = ["CIPHERS", "Binding", "SealError", "Sealer", "SealerExhausted", "crypt_server"]
