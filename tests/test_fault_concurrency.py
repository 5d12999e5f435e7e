"""The fault path resolves faults concurrently: a slow or hung pager delays only the
faults that need it; the rules that keep this safe (busy pages, one eviction at a time,
discards after the pages' last store) hold under process exit and tiny RAM."""

from __future__ import annotations

from typing import Any

import trio

import capkern
from capkern import Process, programs
from capkern import _serverloop as serverloop
from capkern._pagefmt import PAGE_SIZE
from capkern.servers.pager import Pager, make_pager


class Switch:
    """Flipped by a test: from then on the pager hangs on every request."""

    hang = False
    store_delay = 0.0
    labels: list[str]

    def __init__(self) -> None:
        self.labels = []


def switched_pager(switch: Switch) -> capkern.Program:
    class SwitchedPager(Pager):
        def handlers(self) -> serverloop.Table:
            return serverloop.around(super().handlers(), self.switched)

        async def switched(self, label: str, handler: serverloop.Handler, body: Any) -> Any:
            switch.labels.append(label)
            if switch.hang:
                await trio.sleep_forever()
            if label == "store" and switch.store_delay:
                await trio.sleep(switch.store_delay)
            return await handler(body)

    return make_pager(cls=SwitchedPager)


def _accounted(kernel: capkern.Kernel) -> tuple[int, int]:
    vm = kernel.vm
    assert vm is not None
    resident = sum(d.resident_pages for d in kernel.domains())
    return vm.frames.free_count + resident, kernel.config.ram_pages


async def _write_pages(proc: Process, n: int, fill: bytes) -> int:
    base = proc.mmap(n * PAGE_SIZE)
    for i in range(n):
        await proc.write(base + i * PAGE_SIZE, fill * 16)
    return base


async def test_a_hung_page_in_does_not_hold_up_a_zero_fill(
        autojump_clock: trio.abc.Clock) -> None:
    switch = Switch()
    finished: dict[str, float] = {}

    async def swapper(proc: Process) -> None:
        base = await _write_pages(proc, 8, b"a")  # 6 frames: some pages go to swap
        await trio.sleep(10)  # the pager hangs from t=5
        try:
            await proc.read(base, 1)  # page 0 was evicted first: a page-in
        finally:
            finished["swapper"] = trio.current_time()

    async def zero_filler(proc: Process) -> None:
        await _write_pages(proc, 1, b"z")  # a free frame is there: no pager needed
        finished["zero"] = trio.current_time()

    async with capkern.boot(ram_pages=6, evict_batch=4, pager_deadline=3.0,
                            pager=switched_pager(switch)) as kernel:
        swapper_pid = kernel.spawn(swapper)
        await trio.sleep(5)
        switch.hang = True
        await trio.sleep(6)  # t=11: the swapper's page-in is hanging
        zero_pid = kernel.spawn(zero_filler)
        zero_status = await kernel.wait(zero_pid)
        swapper_status = await kernel.wait(swapper_pid)
    assert zero_status.ok, zero_status
    assert finished["zero"] < 11.5, finished  # did not wait for the hung page-in
    assert not swapper_status.ok and "PagerUnavailable" in str(swapper_status.error)
    assert 13 <= finished["swapper"] <= 14.5, finished  # one deadline after its fault


async def test_faults_waiting_for_memory_fail_together_when_the_pager_hangs(
        autojump_clock: trio.abc.Clock) -> None:
    """RAM is full and the pager hangs: the faults that need a frame share the one
    eviction under way and fail with it, instead of each waiting its own deadlines."""
    switch = Switch()
    failed: list[tuple[float, str]] = []

    async def worker(proc: Process, seed: int) -> None:
        await _write_pages(proc, 3, bytes([seed]))
        await trio.sleep(10)  # the pager hangs from t=5
        try:
            await _write_pages(proc, 2, b"n")  # new pages: RAM is full, must evict
        except capkern.CapkernError as exc:
            failed.append((trio.current_time(), type(exc).__name__))
        await trio.sleep_forever()  # stay alive: an exit would free frames for the others

    deadline = 2.0
    async with capkern.boot(ram_pages=9, evict_batch=2, pager_deadline=deadline,
                            pager=switched_pager(switch)) as kernel:
        for seed in range(3):
            kernel.spawn(worker, seed)
        await trio.sleep(5)
        switch.hang = True
        await trio.sleep(30)
        assert _accounted(kernel)[0] == kernel.config.ram_pages  # nothing lost or leaked
    assert [kind for _, kind in failed] == ["OutOfMemory"] * 3, failed
    # evict (one deadline, then FIFO fallback) + store (one deadline): all at once
    assert max(t for t, _ in failed) - 10 <= 2 * deadline + 0.5, failed


async def test_exit_during_a_store_frees_every_frame(autojump_clock: trio.abc.Clock) -> None:
    """Regression: a process killed while its pages' sealed copies were being stored
    leaked those frames, and the fault that caused the eviction failed with an internal
    KeyError; the pager must also hear the discard after the store."""
    switch = Switch()
    switch.store_delay = 1.0

    async def hog(proc: Process) -> None:
        await _write_pages(proc, 8, b"h")
        await trio.sleep_forever()

    async def touch_two(proc: Process) -> None:
        await _write_pages(proc, 2, b"t")

    async with capkern.boot(ram_pages=8, evict_batch=4, pager=switched_pager(switch)) as k:
        hog_pid = k.spawn(hog)
        await trio.sleep(0.1)
        toucher = k.spawn(touch_two)
        await trio.sleep(0.5)  # the toucher's eviction of the hog's pages is storing
        assert switch.labels[-1] == "store"
        k.kill(hog_pid)
        status = await k.wait(toucher)
        await trio.sleep(5)
        assert k.vm is not None
        pager = (await k.vm.server_stats())["pager"]
        accounted, ram = _accounted(k)
    assert status.ok, status
    assert accounted == ram  # no frame leaked
    assert switch.labels.index("discard") > switch.labels.index("store")
    assert pager["swap_used"] == 0  # the hog's stored pages were discarded after all


async def test_tiny_ram_many_processes_no_spurious_out_of_memory() -> None:
    """One frame, several processes faulting at once: a fault finding every frame on
    its way to another page waits for it instead of failing."""
    async with capkern.boot(ram_pages=1, evict_batch=1) as kernel:
        pids = [kernel.spawn(programs.sequential, 3, 2, seed) for seed in range(4)]
        statuses = [await kernel.wait(p) for p in pids]
        accounted, ram = _accounted(kernel)
    assert all(s.ok for s in statuses), statuses
    assert accounted == ram


async def test_concurrent_faults_on_one_page_page_it_in_once() -> None:
    async def reader(proc: Process) -> int:
        base = await _write_pages(proc, 6, b"r")  # 4 frames: page 0 is swapped out
        page_ins_before = kernel.stats.page_ins
        got: list[bytes] = []

        async def read_page0() -> None:
            got.append(await proc.read(base, 16))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(read_page0)
        assert got == [b"r" * 16] * 5
        return kernel.stats.page_ins - page_ins_before

    async with capkern.boot(ram_pages=4, evict_batch=2) as kernel:
        status = await kernel.wait(kernel.spawn(reader))
    assert status.state == "exited" and status.code == 1, status  # 5 readers, 1 page-in
