"""The contracts of the system servers: sealer (crypt), pager and block device.

Plain data shared by both sides of each channel.  The kernel binds them to the server
endpoints it creates at boot, so every request and reply is checked at the boundary.
"""

from __future__ import annotations

from ._contract import Any_, Bytes, Contract, Int, ListOf, Null, Op, Str, Struct, Tuple
from ._pagefmt import PAGE_SIZE, SEALED_LEN

__all__ = ["BLOCKDEV", "CRYPT", "MAX_BATCH", "PAGER"]

MAX_BATCH = 64
U64 = Int(0, (1 << 64) - 1)
HANDLE = Int(0, (1 << 63) - 1)
_BINDING = Tuple((Int(0, (1 << 32) - 1), U64, U64, U64))  # asid, incarnation, vpn, version
_ANY_BLOB = Bytes(0, 2 * SEALED_LEN)  # length is judged by the sealer, not the contract

CRYPT = Contract(
    "crypt",
    {
        "seal": Op(
            Struct({"pages": ListOf(Tuple((_BINDING, Bytes(PAGE_SIZE, PAGE_SIZE))), MAX_BATCH, 1)}),
            Struct({"blobs": ListOf(Bytes(SEALED_LEN, SEALED_LEN), MAX_BATCH)}),
            frozenset({"exhausted"}),
        ),
        "unseal": Op(
            Struct({"pages": ListOf(Tuple((_BINDING, _ANY_BLOB)), MAX_BATCH, 1)}),
            Struct(
                {
                    "plain": ListOf(Bytes(0, PAGE_SIZE), MAX_BATCH),
                    "ok": ListOf(Int(0, 1), MAX_BATCH),
                }
            ),
        ),
        "stats": Op(
            Struct({}), Struct({"cipher": Str(32), "seals": U64, "unseals": U64, "refused": U64})
        ),
    },
)

# what the kernel reports to the pager: pages mapped since it last heard, references
# (precise mode: every one, in order), dirty pages; in oracle mode (offline simulation)
# each reference's next-use position, parallel to "referenced"
_REPORT = {
    "mapped": ListOf(HANDLE, 1 << 16),
    "referenced": ListOf(HANDLE, 1 << 16),
    "dirty": ListOf(HANDLE, 1 << 16),
    "next_use": ListOf(HANDLE, 1 << 16),
    "spaces": ListOf(HANDLE, 1 << 16),  # precise mode: the space tag of each mapped page
}
_REPORT_OPTIONAL = frozenset({"next_use", "spaces"})

PAGER = Contract(
    "pager",
    {
        # choose victims; the kernel reports what changed since its last request
        "evict": Op(
            # "for": precise mode, the space tag of the fault the eviction serves
            Struct({"n": Int(1, 1024), "for": HANDLE, **_REPORT}, _REPORT_OPTIONAL | {"for"}),
            Struct({"victims": ListOf(HANDLE, 1024)}),
            frozenset({"io"}),
        ),
        # precise mode: a full reference log, reported before the next eviction
        "observe": Op(Struct(_REPORT, _REPORT_OPTIONAL), Null(), frozenset({"io"})),
        "store": Op(
            Struct({"pages": ListOf(Tuple((HANDLE, Bytes(SEALED_LEN, SEALED_LEN))), MAX_BATCH, 1)}),
            Struct({"stored": ListOf(HANDLE, MAX_BATCH)}),
            frozenset({"io", "no_space"}),
        ),
        "fetch": Op(
            Struct({"handle": HANDLE}),
            Struct({"blob": _ANY_BLOB}),
            frozenset({"not_found", "io", "integrity", "lost"}),
        ),
        # several pages in one trip (read-ahead, a burst's page-ins); b"" for a page the
        # pager does not have; "unsupported" from a pager written before it
        "fetch_many": Op(
            Struct({"handles": ListOf(HANDLE, MAX_BATCH, 1)}),
            Struct({"blobs": ListOf(_ANY_BLOB, MAX_BATCH)}),
            frozenset({"io", "unsupported"}),
        ),
        "discard": Op(Struct({"handles": ListOf(HANDLE, 1 << 16)}), Null(), frozenset({"io"})),
        "stats": Op(Struct({}), Any_()),
    },
)

_LBAS = ListOf(Int(0, (1 << 48) - 1), 256, 1)

BLOCKDEV = Contract(
    "blockdev",
    {
        "info": Op(Struct({}), Struct({"block_size": Int(1, 1 << 20), "nblocks": Int(0, 1 << 48)})),
        "read": Op(
            Struct({"lbas": _LBAS}),
            Struct({"blocks": ListOf(Bytes(0, 1 << 20), 256)}),
            frozenset({"range", "io"}),
        ),
        "write": Op(
            Struct({"blocks": ListOf(Tuple((Int(0, (1 << 48) - 1), Bytes(0, 1 << 20))), 256, 1)}),
            Null(),
            frozenset({"range", "misaligned", "io"}),
        ),
        "flush": Op(Struct({}), Null(), frozenset({"io"})),
        "trim": Op(
            Struct({"lba": Int(0, (1 << 48) - 1), "count": Int(1, 1 << 20)}),
            Null(),
            frozenset({"range", "io"}),
        ),
        "stats": Op(Struct({}), Any_()),
    },
)
