"""PagerSetPort against fake member ports: placement of copies and shards, which member
is blamed, hedging in virtual time, primary failover, deadlines and typed errors."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

from capkern._pagefmt import SEALED_LEN
from capkern.errors import ConfigError, PagerUnavailable, ServerError
from capkern.pagerset._port import PagerSetPort

DEADLINE = 2.0


class FakePager:
    """A member: stores what it is given; ``mode`` makes it lie, hang, fail or lag."""

    def __init__(self, name: str, mode: str = "honest", delay: float = 0.0) -> None:
        self.name = name
        self.mode = mode
        self.delay = delay
        self.pages: dict[int, bytes] = {}
        self.calls: list[str] = []

    async def call(self, label: str, body: Any, deadline: float) -> Any:
        self.calls.append(label)
        with trio.move_on_after(deadline):
            if self.mode == "hang":
                await trio.sleep_forever()
            await trio.sleep(self.delay)
            return self._answer(label, body)
        raise PagerUnavailable(f"{self.name} timed out")

    def _answer(self, label: str, body: Any) -> Any:
        if self.mode == "fail":
            raise ServerError("io", "broken")
        if label == "store":
            for h, blob in body["pages"]:
                self.pages[h] = blob
            return {"stored": [h for h, _ in body["pages"]]}
        if label == "fetch":
            blob = self.pages.get(body["handle"])
            if blob is None:
                raise ServerError("not_found", "no")
            if self.mode == "flip":
                blob = bytes([blob[0] ^ 1]) + blob[1:]
            return {"blob": blob}
        if label == "evict":
            return {"victims": [self.name.__hash__() & 0xFF]}
        if label == "discard":
            for h in body["handles"]:
                self.pages.pop(h, None)
            return None
        return {"name": self.name}


def _set(modes: list[str], **kw: Any) -> tuple[PagerSetPort, list[FakePager], list[Any]]:
    fakes = [FakePager(f"p{i}", m) for i, m in enumerate(modes)]
    quarantined: list[Any] = []
    port = PagerSetPort(fakes, on_quarantine=lambda i, why: quarantined.append(i), **kw)
    return port, fakes, quarantined


def _blob(seed: int) -> bytes:
    return os.urandom(SEALED_LEN - 1) + bytes([seed])


async def test_mirror_stores_k_copies_and_refuses_a_wrong_one(capkern_clock):
    port, fakes, quarantined = _set(["honest"] * 4, copies=2)
    blobs = {h: _blob(h) for h in range(1, 21)}
    reply = await port.call("store", {"pages": list(blobs.items())}, DEADLINE)
    assert sorted(reply["stored"]) == sorted(blobs)
    for h in blobs:  # exactly two copies each, spread over every member
        assert sum(h in f.pages for f in fakes) == 2
    assert all(f.pages for f in fakes)
    h = 7
    first = port._order(h, port.holders[h])[0]
    fakes[first].mode = "flip"
    got = await port.call("fetch", {"handle": h}, DEADLINE)
    assert got["blob"] == blobs[h]
    assert quarantined == [first] and port.members[first].quarantined
    # never asked again: its calls stop growing
    before = len(fakes[first].calls)
    for h2 in blobs:
        assert (await port.call("fetch", {"handle": h2}, DEADLINE))["blob"] == blobs[h2]
    assert len(fakes[first].calls) == before


async def test_mirror_hedges_a_silent_holder(capkern_clock):
    port, fakes, _ = _set(["honest"] * 3, copies=3, hedge=0.05)
    await port.call("store", {"pages": [[5, _blob(5)]]}, DEADLINE)
    first = port._order(5, port.holders[5])[0]
    fakes[first].mode = "hang"
    t0 = trio.current_time()
    got = await port.call("fetch", {"handle": 5}, DEADLINE)
    assert got["blob"] == fakes[(first + 1) % 3].pages[5]
    assert trio.current_time() - t0 < 0.2  # one hedge delay, not the deadline
    assert port.counts["hedges"] >= 1 and not port.members[first].quarantined
    # it is asked last next time: no hedge delay at all
    t0 = trio.current_time()
    await port.call("fetch", {"handle": 5}, DEADLINE)
    assert trio.current_time() - t0 < 0.01


async def test_every_copy_wrong_is_integrity_and_every_holder_silent_is_unavailable(
        capkern_clock):
    port, fakes, _ = _set(["honest"] * 2, copies=2)
    await port.call("store", {"pages": [[1, _blob(1)], [2, _blob(2)]]}, DEADLINE)
    for f in fakes:
        f.mode = "flip"
    with pytest.raises(ServerError) as info:
        await port.call("fetch", {"handle": 1}, DEADLINE)
    assert info.value.reason == "integrity"
    port, fakes, _ = _set(["honest"] * 2, copies=2)
    await port.call("store", {"pages": [[1, _blob(1)]]}, DEADLINE)
    for f in fakes:
        f.mode = "hang"
    t0 = trio.current_time()
    with pytest.raises(PagerUnavailable):
        await port.call("fetch", {"handle": 1}, DEADLINE)
    assert trio.current_time() - t0 == pytest.approx(DEADLINE)
    with pytest.raises(ServerError) as info:
        await port.call("fetch", {"handle": 99}, DEADLINE)
    assert info.value.reason == "not_found"


async def test_erasure_names_the_corrupt_shard_and_rebuilds(capkern_clock):
    port, fakes, quarantined = _set(["honest"] * 5, mode="erasure", needed=3)
    blob = _blob(3)
    await port.call("store", {"pages": [[3, blob]]}, DEADLINE)
    assert all(3 in f.pages for f in fakes)
    assert all(len(f.pages[3]) == SEALED_LEN for f in fakes)  # a sealed page's format
    holders = port.placement.shard_holders(3)
    assert fakes[holders[0]].pages[3][:64] == blob[:64]  # shard 0: the blob's start
    assert all(blob[:64] not in fakes[i].pages[3] for i in holders[3:])  # parity
    liars = holders[:2]  # two data shards' holders lie
    for i in liars:
        fakes[i].mode = "flip"
    assert (await port.call("fetch", {"handle": 3}, DEADLINE))["blob"] == blob
    assert sorted(quarantined) == sorted(liars)
    # a third failure leaves fewer than 3 shards: refused, never a wrong page
    fakes[holders[2]].mode = "fail"
    with pytest.raises((ServerError, PagerUnavailable)):
        await port.call("fetch", {"handle": 3}, DEADLINE)


async def test_erasure_replayed_shard_fails_its_tag(capkern_clock):
    port, fakes, quarantined = _set(["honest"] * 3, mode="erasure", needed=2)
    old, new = _blob(1), _blob(2)
    await port.call("store", {"pages": [[9, old]]}, DEADLINE)
    stale = dict(fakes[0].pages)
    await port.call("store", {"pages": [[9, new]]}, DEADLINE)
    fakes[0].pages.update(stale)  # member 0 replays the older shard
    assert (await port.call("fetch", {"handle": 9}, DEADLINE))["blob"] == new
    assert quarantined in ([0], [])  # blamed if it was asked
    if not quarantined:
        assert "fetch" not in fakes[0].calls


async def test_primary_chooses_victims_and_fails_over(capkern_clock):
    port, fakes, _ = _set(["honest"] * 3, copies=2)
    report = {"n": 1, "mapped": [], "referenced": [], "dirty": []}
    await port.call("evict", report, DEADLINE)
    assert fakes[0].calls == ["evict"] and not fakes[1].calls
    fakes[0].mode = "hang"
    t0 = trio.current_time()
    await port.call("evict", report, DEADLINE)
    assert trio.current_time() - t0 < DEADLINE and port.primary == 1
    await port.call("evict", report, DEADLINE)
    assert fakes[1].calls == ["evict", "evict"]


async def test_rejoin_refills_on_the_next_store(capkern_clock):
    port, _fakes, _ = _set(["honest"] * 3, copies=3)
    await port.call("store", {"pages": [[4, _blob(4)]]}, DEADLINE)
    port.quarantine(0, "test")
    await port.call("store", {"pages": [[4, _blob(5)]]}, DEADLINE)
    assert port.holders[4] and 0 not in port.holders[4]
    fresh = FakePager("p0-new")
    port.rejoin(0, fresh)
    await port.call("store", {"pages": [[4, _blob(6)]]}, DEADLINE)
    assert 0 in port.holders[4] and 4 in fresh.pages
    await port.call("discard", {"handles": [4]}, DEADLINE)
    assert 4 not in fresh.pages and 4 not in port.holders


def test_bad_configurations():
    fakes = [FakePager("a"), FakePager("b")]
    for kw in ({"mode": "raid"}, {"copies": 3}, {"mode": "erasure"},
               {"mode": "erasure", "needed": 3}, {"hedge": 0}, {"hedge": float("nan")}):
        with pytest.raises(ConfigError):
            PagerSetPort(fakes, **kw)
    with pytest.raises(ConfigError):
        PagerSetPort([])


async def test_a_member_left_with_an_old_copy_is_told_to_forget_it(capkern_clock):
    port, fakes, _ = _set(["honest"] * 3, copies=2)
    await port.call("store", {"pages": [[8, _blob(1)]]}, DEADLINE)
    x, y = port.holders[8]
    z = ({0, 1, 2} - {x, y}).pop()
    port.quarantine(x, "test")
    await port.call("store", {"pages": [[8, _blob(2)]]}, DEADLINE)
    assert set(port.holders[8]) == {y, z}
    port.rejoin(x, FakePager("x-new"))
    blob = _blob(3)
    await port.call("store", {"pages": [[8, blob]]}, DEADLINE)
    assert set(port.holders[8]) == {x, y}
    assert 8 not in fakes[z].pages  # z's stale copy was discarded
    assert fakes[y].pages[8] == blob and port.counts["stale_discards"] == 1
