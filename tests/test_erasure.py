"""Erasure-coded sealed pages: any m of n shards rebuild the blob, and every corrupted
shard is caught by its tag and named, so the kernel knows which pager to blame."""

from __future__ import annotations

import itertools
import os

import pytest

from capkern._pagefmt import SEALED_LEN
from capkern.errors import ConfigError, IntegrityFault
from capkern.pagerset import ErasureCode, NotEnoughShards, overhead_erasure, overhead_mirror
from capkern.pagerset._erasure import TAG_LEN
from capkern.servers.crypt._sealer import Binding, Sealer

BOOT = bytes(16)


def ctx(vpn: int = 7, version: int = 1, asid: int = 3, incarnation: int = 0) -> bytes:
    return Binding(BOOT, asid, incarnation, vpn, version).associated_data()


@pytest.mark.parametrize(("n", "m"), [(5, 3), (3, 1), (4, 4), (6, 2), (7, 5)])
def test_any_m_of_n_rebuild(n: int, m: int) -> None:
    code = ErasureCode(n, m, SEALED_LEN)
    blob = os.urandom(SEALED_LEN)
    shards = code.encode(blob, ctx())
    assert len(shards) == n and all(len(s) == code.stored_len for s in shards)
    for subset in itertools.combinations(range(n), m):
        got = code.decode({i: shards[i] for i in subset}, ctx())
        assert got.blob == blob and got.used == subset and got.bad == ()


def test_a_real_sealed_page_survives_the_round_trip() -> None:
    sealer = Sealer()
    binding = Binding(os.urandom(16), 1, 2, 3, 4)
    page = os.urandom(4096)
    blob = sealer.seal(binding, page)
    code = ErasureCode(5, 3, len(blob))
    shards = code.encode(blob, binding.associated_data())
    rebuilt = code.decode({4: shards[4], 1: shards[1], 3: shards[3]}, binding.associated_data())
    assert sealer.unseal(binding, rebuilt.blob) == page


def test_every_single_bit_flip_in_any_shard_is_detected() -> None:
    """Exhaustive over a full-size sealed page: 5 shards x every bit of data and tag."""
    code = ErasureCode(5, 3, SEALED_LEN)
    shards = code.encode(os.urandom(SEALED_LEN), ctx())
    for index, shard in enumerate(shards):
        buf = bytearray(shard)
        for bit in range(len(shard) * 8):
            buf[bit // 8] ^= 1 << (bit % 8)
            assert not code.verify(index, bytes(buf), ctx()), (index, bit)
            buf[bit // 8] ^= 1 << (bit % 8)
        assert code.verify(index, bytes(buf), ctx())


def test_every_single_bit_flip_is_attributed_and_repaired() -> None:
    """Exhaustive decode on a small blob: the flipped shard is named, the blob is right."""
    code = ErasureCode(5, 3, 64)
    blob = os.urandom(64)
    shards = code.encode(blob, ctx())
    for index in range(5):
        for bit in range(code.stored_len * 8):
            bad = bytearray(shards[index])
            bad[bit // 8] ^= 1 << (bit % 8)
            offered = dict(enumerate(shards))
            offered[index] = bytes(bad)
            got = code.decode(offered, ctx())
            assert got.blob == blob and got.bad == (index,) and index not in got.used


@pytest.mark.parametrize(
    "mangle",
    [lambda s: s[:-1], lambda s: s + b"\x00", lambda s: b"", lambda s: s[1:] + s[:1],
     lambda s: bytearray(s), lambda s: None, lambda s: s.hex()],
    ids=["truncated", "extended", "empty", "rotated", "bytearray", "none", "str"],
)
def test_malformed_shards_are_bad_not_errors(mangle) -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    blob = os.urandom(SEALED_LEN)
    shards = code.encode(blob, ctx())
    offered: dict[int, object] = dict(enumerate(shards))
    offered[2] = mangle(shards[2])
    got = code.decode(offered, ctx())
    assert got.blob == blob and got.bad == (2,)


def test_shard_under_another_index_is_refused() -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    blob = os.urandom(SEALED_LEN)
    s = code.encode(blob, ctx())
    got = code.decode({0: s[1], 1: s[0], 2: s[2], 3: s[3], 4: s[4]}, ctx())
    assert got.bad == (0, 1) and got.blob == blob


@pytest.mark.parametrize(
    "other",
    [ctx(version=2), ctx(vpn=8), ctx(asid=4), ctx(incarnation=1),
     Binding(b"\x01" * 16, 3, 0, 7, 1).associated_data()],
    ids=["older-version", "other-page", "other-space", "other-incarnation", "other-boot"],
)
def test_shards_of_another_binding_are_all_refused(other: bytes) -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    shards = code.encode(os.urandom(SEALED_LEN), other)
    with pytest.raises(NotEnoughShards) as info:
        code.decode(dict(enumerate(shards)), ctx())
    assert info.value.bad == [0, 1, 2, 3, 4] and info.value.missing == []
    assert isinstance(info.value, IntegrityFault)


def test_shards_under_another_key_are_refused() -> None:
    a, b = ErasureCode(5, 3, SEALED_LEN), ErasureCode(5, 3, SEALED_LEN)
    shards = a.encode(os.urandom(SEALED_LEN), ctx())
    assert not any(b.verify(i, s, ctx()) for i, s in enumerate(shards))


def test_n_minus_m_corrupt_still_rebuild_one_more_does_not() -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    blob = os.urandom(SEALED_LEN)
    shards = code.encode(blob, ctx())
    for corrupt in itertools.combinations(range(5), 2):
        offered = {i: (bytes(len(s)) if i in corrupt else s) for i, s in enumerate(shards)}
        got = code.decode(offered, ctx())
        assert got.blob == blob and got.bad == corrupt
    offered = {i: (b"junk" if i < 3 else s) for i, s in enumerate(shards)}
    with pytest.raises(NotEnoughShards) as info:
        code.decode(offered, ctx())
    assert info.value.bad == [0, 1, 2]
    with pytest.raises(NotEnoughShards) as info:
        code.decode({0: shards[0], 4: shards[4]}, ctx())
    assert info.value.missing == [1, 2, 3] and info.value.bad == []


def test_storage_overhead() -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    assert code.shard_len == -(-SEALED_LEN // 3) and code.stored_len == code.shard_len + TAG_LEN
    assert code.overhead == pytest.approx(5 * (1375 + 16) / SEALED_LEN)
    assert code.overhead == pytest.approx(overhead_erasure(5, 3, SEALED_LEN))
    assert 5 / 3 < code.overhead < 1.7 < overhead_mirror(3) == 3.0
    assert ErasureCode(4, 4, 4096).overhead == pytest.approx(4 * 1040 / 4096)


@pytest.mark.parametrize(
    ("n", "m", "blob_len"),
    [(3, 4, 100), (257, 3, 100), (5, 0, 100), (0, 0, 100), (5, 3, 0), (5.0, 3, 100),
     (True, 1, 100), (5, 3, "100")],
)
def test_bad_parameters_are_config_errors(n: object, m: object, blob_len: object) -> None:
    with pytest.raises(ConfigError):
        ErasureCode(n, m, blob_len)  # type: ignore[arg-type]


def test_wrong_blob_size_is_refused_before_encoding() -> None:
    code = ErasureCode(5, 3, SEALED_LEN)
    with pytest.raises(ValueError):
        code.encode(b"x" * (SEALED_LEN - 1), ctx())
    with pytest.raises(ConfigError):
        ErasureCode(5, 3, SEALED_LEN, key=b"short")
