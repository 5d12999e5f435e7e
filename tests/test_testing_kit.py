"""The adversarial testing kit itself: its assertions must not give a false all-clear,
its composition wrappers must be deterministic per request, and each attacker must
really perform (and record) its attack.

Where a test needs the kernel to misbehave (to show an assertion would catch it), it
simulates the kernel bug by patching ``Process.read`` in the test -- the kit under
review is what is being tested, not the kernel.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from capkern import errors, programs
from capkern._pagefmt import PAGE_SIZE, SEALED_LEN
from capkern._proc import Process
from capkern.testing import (
    AttackPager,
    BitFlip,
    Evidence,
    ForgeCaps,
    Only,
    Replay,
    Slow,
    Snoop,
    Sometimes,
    Swap,
    Tamper,
    Truncate,
    WrongRead,
    assert_no_plaintext,
    assert_no_wrong_reads,
    attack_pager,
    expected_pages,
    is_typed_fault,
    page_pattern_for,
    run_workload,
)

PAGES, RAM = 12, 4


def _corrupting_read(monkeypatch: pytest.MonkeyPatch, wrong_at: int,
                     fault_at: int | None = None) -> None:
    """Simulate a broken kernel: the ``wrong_at``-th read returns one wrong byte, and
    (optionally) the ``fault_at``-th read raises a typed IntegrityFault."""
    real_read = Process.read
    count = 0

    async def read(self: Process, addr: int, n: int) -> bytes:
        nonlocal count
        count += 1
        if count == fault_at:
            raise errors.IntegrityFault("simulated: refused after the wrong read")
        data = await real_read(self, addr, n)
        if count == wrong_at:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    monkeypatch.setattr(Process, "read", read)


# -- assert_no_wrong_reads compares against what was written -------------------------------


async def test_wrong_read_then_typed_fault_is_not_all_clear(kernel_factory, monkeypatch,
                                                            capkern_clock):
    # sequential counts the wrong byte, then dies of a typed fault: its count is lost and
    # the status alone says "typed fault" -- the kit must still see the wrong read.
    _corrupting_read(monkeypatch, wrong_at=2, fault_at=5)
    async with kernel_factory(ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    assert statuses[0].state == "failed"
    assert "WrongRead" in (statuses[0].error or "")
    assert statuses.wrong_reads and "wrong byte" in statuses.wrong_reads[0]
    with pytest.raises(AssertionError, match="wrong data was read"):
        assert_no_wrong_reads(statuses)


async def _reads_without_checking(proc: Any, pages: int) -> int:
    base = proc.mmap(pages * PAGE_SIZE)
    for p in range(pages):
        await proc.write(base + p * PAGE_SIZE, programs.page_pattern(9, p))
    for p in range(pages):
        await proc.read(base + p * PAGE_SIZE, PAGE_SIZE)
    return 0  # "all fine": a user program that never compares what it read


async def test_wrong_read_is_caught_even_if_the_program_never_checks(kernel_factory, monkeypatch,
                                                                    capkern_clock):
    _corrupting_read(monkeypatch, wrong_at=3)
    async with kernel_factory(ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, _reads_without_checking, PAGES)
    assert not is_typed_fault(statuses[0])
    with pytest.raises(AssertionError):
        assert_no_wrong_reads(statuses)


async def test_honest_run_is_all_clear_and_records_what_was_written(kernel_factory, evidence,
                                                                   capkern_clock):
    pager = attack_pager(Snoop(), evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2, seeds=range(2))
    assert all(s.ok for s in statuses) and statuses.wrong_reads == []
    assert_no_wrong_reads(statuses)
    assert set(statuses.written) == {p for s in range(2) for p in expected_pages(s, PAGES, 2)}
    assert_no_plaintext(evidence, statuses.written)


# -- assert_no_plaintext does not pass vacuously ----------------------------------------------


@pytest.mark.filterwarnings("ignore::capkern.InsecureWarning")  # the null cipher, on purpose
async def test_no_plaintext_refuses_an_evidence_the_attacker_never_used(kernel_factory, evidence,
                                                                       capkern_clock):
    pager = attack_pager(Snoop())  # forgot evidence=evidence: the fixture sees nothing
    async with kernel_factory(pager=pager, ram_pages=RAM, cipher="null") as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    with pytest.raises(AssertionError, match="saw nothing"):
        assert_no_plaintext(evidence, statuses.written)
    with pytest.raises(AssertionError, match="INSECURE"):  # the null cipher: refused outright
        assert_no_plaintext(pager.evidence, statuses.written)
    assert pager.evidence.saw_window_of(statuses.written)  # and it did leak
    with pytest.raises(AssertionError, match="vacuously"):
        assert_no_plaintext(pager.evidence, [])


def test_plaintext_sent_as_text_is_looked_at() -> None:
    page = programs.page_pattern(1, 0)
    ev = Evidence()
    ev.record({"detail": page.decode("latin-1")})  # smuggled out in a string field
    assert ev.saw_window_of([page.decode("latin-1").encode("utf-8")])
    with pytest.raises(AssertionError, match="plaintext reached"):
        assert_no_plaintext(ev, [page.decode("latin-1").encode("utf-8")])


@pytest.mark.parametrize("program,short,args",
                         [(programs.random_ws, "random", (256,)),
                          (programs.zipf, "zipf", (256, 1.1)),
                          (programs.random_ws, "random", (50,)),
                          (programs.phased, "phased", (4,)),
                          (programs.sequential, "sequential", (3,))])
async def test_page_pattern_for_lists_every_page_the_program_writes(
        program, short, args, kernel_factory, capkern_clock):
    async with kernel_factory(ram_pages=64) as kernel:
        statuses = await run_workload(kernel, program, 8, *args, seeds=[5])
    assert statuses[0].ok and statuses.written
    assert set(statuses.written) <= set(page_pattern_for(short, 8, 5))  # the defaults
    assert set(statuses.written) <= set(page_pattern_for(short, 8, 5, *args))


# -- composition: Sometimes decides once per request ----------------------------------------


class _Marks(Tamper):
    """Notes, for each request, whether it was attacked in the reply and fetch phases."""

    name = "marks"

    def __init__(self) -> None:
        self.replied: set[int] = set()
        self.fetched: set[int] = set()

    async def respond(self, pager: AttackPager, label: str, body: Any) -> bool:
        if label == "fetch":
            self.replied.add(pager.requests)
        return False

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        self.fetched.add(pager.requests)
        return blob


async def test_sometimes_reply_and_fetch_phase_agree(kernel_factory, evidence, capkern_clock):
    marks = _Marks()
    pager = attack_pager(Sometimes(marks, 0.5, seed=11), evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 3)
    assert statuses[0].ok
    assert marks.replied, "no fetch was attacked"
    assert marks.replied == marks.fetched


class _FakePager:
    requests = 0


def test_sometimes_is_a_function_of_seed_and_request_number() -> None:
    a, b = Sometimes(Snoop(), 0.3, seed=4), Sometimes(Snoop(), 0.3, seed=4)
    pager = _FakePager()
    picks_a, picks_b = [], []
    for n in range(1, 400):
        pager.requests = n
        picks_a.append(a.active(pager, "fetch"))  # type: ignore[arg-type]
        for _ in range(n % 3):  # b is consulted a varying number of times per request
            b.active(pager, "store")  # type: ignore[arg-type]
        picks_b.append(b.active(pager, "fetch"))  # type: ignore[arg-type]
    assert picks_a == picks_b
    assert 0.2 < sum(picks_a) / len(picks_a) < 0.4
    assert picks_a != [Sometimes(Snoop(), 0.3, seed=5).chosen(n) for n in range(1, 400)]


# -- attackers perform (and record) their attack ----------------------------------------------


async def test_truncate_then_bitflip_tag_composes(kernel_factory, evidence, capkern_clock):
    pager = attack_pager(Truncate(200), BitFlip("tag"), evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM, pager_deadline=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    assert evidence.tried["truncate"] >= 1 and evidence.tried["bitflip-tag"] >= 1
    # the pager did not die of its own composition
    assert [e for e in kernel.events.of_kind("crash") if e.domain == "pager"] == []
    assert "IntegrityFault" in (statuses[0].error or "")


@pytest.mark.parametrize("region", BitFlip.REGIONS)
async def test_bitflip_flips_exactly_one_bit_in_its_region(region: str) -> None:
    flip = BitFlip(region, seed=3)
    blob = bytes(range(256)) * (SEALED_LEN // 256) + bytes(SEALED_LEN % 256)
    for _ in range(20):
        out = await flip.fetch(None, 1, blob)  # type: ignore[arg-type]
        diff = [i for i in range(SEALED_LEN) if out[i] != blob[i]]
        assert len(diff) == 1 and bin(out[diff[0]] ^ blob[diff[0]]).count("1") == 1
        lo, hi = flip.span(SEALED_LEN)
        assert lo <= diff[0] < hi
    assert flip.span(SEALED_LEN)[1] - flip.span(SEALED_LEN)[0] == {
        "nonce": 12, "tag": 16, "ciphertext": PAGE_SIZE, "any": SEALED_LEN}[region]


async def test_slow_records_its_delays(kernel_factory, evidence, capkern_clock):
    pager = attack_pager(Slow(0.25), evidence=evidence)
    start = trio.current_time()
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    assert statuses[0].ok
    assert evidence.tried["slow"] >= 1
    assert trio.current_time() - start >= 0.25 * evidence.tried["slow"]


async def test_forge_caps_tries_to_receive_on_its_write_only_cap(kernel_factory, evidence,
                                                                 capkern_clock):
    pager = attack_pager(Only(ForgeCaps(), labels=["store"]), evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    assert statuses[0].ok and evidence.breaches == []
    # per attempt: the rights-raising copy AND a recv on the original cap are refused
    assert evidence.refused["InsufficientRights"] == 2 * evidence.tried["forge-caps"] > 0


class _Watch(Tamper):
    """Wraps an attacker's fetch and records (handle, honest blob, returned blob)."""

    def __init__(self, inner: Tamper) -> None:
        self.inner = inner
        self.name = inner.name
        self.log: list[tuple[int, bytes, bytes, dict[int, bytes]]] = []

    async def fetch(self, pager: AttackPager, handle: int, blob: bytes) -> bytes:
        out = await self.inner.fetch(pager, handle, blob)
        self.log.append((handle, blob, out, dict(pager.current)))
        return out


async def test_replay_really_returns_an_older_version_of_the_same_page(kernel_factory,
                                                                      evidence, capkern_clock):
    watch = _Watch(Replay())
    pager = attack_pager(watch, evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 3)
    replayed = [(h, b, o) for h, b, o, _cur in watch.log if o != b]
    assert replayed and evidence.tried["replay"] == len(replayed)
    for handle, blob, out in replayed:
        history = evidence.archive[handle]
        assert history.index(out) < history.index(blob)  # stored earlier, same handle
    assert "IntegrityFault" in (statuses[0].error or "")


async def test_swap_really_returns_another_pages_blob(kernel_factory, evidence, capkern_clock):
    watch = _Watch(Swap())
    pager = attack_pager(watch, evidence=evidence)
    async with kernel_factory(pager=pager, ram_pages=RAM) as kernel:
        statuses = await run_workload(kernel, programs.sequential, PAGES, 2)
    swapped = [(h, o, cur) for h, b, o, cur in watch.log if o != b]
    assert swapped
    for handle, out, current in swapped:
        owners = [h for h, blob in current.items() if blob == out]
        assert owners and handle not in owners
    assert "IntegrityFault" in (statuses[0].error or "")


def test_wrong_read_is_not_a_typed_fault() -> None:
    assert issubclass(WrongRead, AssertionError)
    assert not issubclass(WrongRead, errors.Fault)
