"""The trusted sealer through its real CRYPT contract, in its own domain, driven by a
client domain as the kernel drives it: nonces never repeat, bad blobs and bindings
refused per item, exhaustion typed."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import Kernel
from capkern._pagefmt import PAGE_SIZE, SEALED_LEN
from capkern._proc import Process
from capkern._protocols import MAX_BATCH
from capkern.errors import ContractViolation

from .helpers import (
    _alive,
    _call,
    _reason,
    _run_client,
    _start_crypt,
)


def _page(i: int) -> bytes:
    return bytes([i % 256]) * PAGE_SIZE


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
async def test_crypt_nonces_never_repeat_across_batches_duplicates_and_refusals(
        cipher: str, autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    k = bare_kernel
    ep = _start_crypt(k, cipher)

    async def client(proc: Process) -> Any:
        binding = [1, 0, 5, 1]
        blobs: list[bytes] = []
        # the same (binding, page) many times in one batch, then in several batches,
        # with refused requests in between: every blob gets a fresh nonce
        for size in (MAX_BATCH, 1, 3):
            got = await _call(proc, "seal", {"pages": [[binding, _page(0)]] * size})
            blobs += got["blobs"]
            with pytest.raises(ContractViolation):
                await _call(proc, "seal", {"pages": [[binding, _page(0)[:-1]]]})
            await _call(proc, "unseal", {"pages": [[binding, b"junk"]]})
        nonces = [b[:12] for b in blobs]
        assert len(set(nonces)) == len(nonces) == MAX_BATCH + 4
        assert len(set(blobs)) == len(blobs)
        assert all(len(b) == SEALED_LEN for b in blobs)
        back = await _call(proc, "unseal", {"pages": [[binding, b] for b in blobs[:8]]})
        assert back == {"plain": [_page(0)] * 8, "ok": [1] * 8}
        return await _call(proc, "stats", {})

    stats = await _run_client(k, {"svc": ep}, client)
    assert stats == {"cipher": cipher, "seals": MAX_BATCH + 4, "unseals": 11, "refused": 3}


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305", "null"])
async def test_crypt_refuses_bad_blobs_and_bindings_per_item(
        cipher: str, autojump_clock: trio.testing.MockClock, bare_kernel: Kernel) -> None:
    k = bare_kernel
    ep = _start_crypt(k, cipher)

    async def client(proc: Process) -> Any:
        good = [7, 3, 11, 4]
        blob = (await _call(proc, "seal", {"pages": [[good, _page(9)]]}))["blobs"][0]
        items = [[good, blob]]
        for size in (0, 1, SEALED_LEN - 1, SEALED_LEN + 1, 2 * SEALED_LEN):
            items.append([good, (blob * 3)[:size]])
        for field in range(4):  # another asid, incarnation, vpn, older/newer version
            for delta in (-1, 1):
                other = list(good)
                other[field] += delta
                items.append([other, blob])
        items.append([good, blob[:-1] + bytes([blob[-1] ^ 1])])
        got = await _call(proc, "unseal", {"pages": items})
        assert got["ok"] == [1] + [0] * (len(items) - 1)
        assert got["plain"] == [_page(9)] + [b""] * (len(items) - 1)
        # out-of-range bindings, empty and oversized batches never reach the sealer
        for bad in ([[[1 << 32, 0, 0, 0], blob]], [[[-1, 0, 0, 0], blob]],
                    [[[True, 0, 0, 0], blob]], [[[0, 0, 0], blob]],
                    [], [[good, blob]] * (MAX_BATCH + 1),
                    [[good, b"x" * (2 * SEALED_LEN + 1)]]):
            with pytest.raises(ContractViolation):
                await _call(proc, "unseal", {"pages": bad})
        return len(items)

    assert await _run_client(k, {"svc": ep}, client) == 15
    assert _alive(k, "crypt")


async def test_crypt_exhaustion_mid_batch_is_typed_and_never_reuses_a_nonce(
        monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock,
        bare_kernel: Kernel) -> None:
    from capkern.servers.crypt import _sealer

    monkeypatch.setattr(_sealer, "NONCE_LIMIT", 5)
    k = bare_kernel
    ep = _start_crypt(k)

    async def client(proc: Process) -> Any:
        binding = [1, 0, 0, 1]
        first = (await _call(proc, "seal", {"pages": [[binding, _page(1)]] * 3}))["blobs"]
        # a batch that crosses the limit fails as a whole, with the declared reason
        assert await _reason(proc, "seal", {"pages": [[binding, _page(1)]] * 3}) \
            == "exhausted"
        # the nonces the failed batch consumed are gone: nothing more is sealed
        assert await _reason(proc, "seal", {"pages": [[binding, _page(1)]]}) == "exhausted"
        # unsealing what was sealed still works
        got = await _call(proc, "unseal", {"pages": [[binding, b] for b in first]})
        assert got["ok"] == [1, 1, 1]
        return [b[:12] for b in first], await _call(proc, "stats", {})

    nonces, stats = await _run_client(k, {"svc": ep}, client)
    assert nonces == [bytes(4) + i.to_bytes(8, "big") for i in range(3)]
    assert stats["seals"] == 5
    assert _alive(k, "crypt")
