"""Releasing a huge touched range (an exit, a munmap) goes in bounded steps: the kernel
never holds every other domain up for the whole release, and nothing leaks."""

from __future__ import annotations

import trio

import capkern
from capkern._pagefmt import PAGE_SIZE
from capkern._proc import Process
from capkern.mmu._release import RELEASE_STEP, Releaser


def test_a_release_does_one_step_now_and_queues_the_rest() -> None:
    done: list[list[int]] = []
    r = Releaser[int](done.append, step=3)
    r.release([1, 2])
    assert done == [[1, 2]] and not r.pending
    r.release(list(range(10)))
    assert done[-1] == [0, 1, 2] and r.pending


async def test_the_rest_goes_a_step_per_scheduler_pass() -> None:
    done: list[list[int]] = []
    r = Releaser[int](done.append, step=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.run)
        r.release(list(range(10)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert sorted(x for chunk in done for x in chunk) == list(range(10))
    assert all(len(chunk) <= 3 for chunk in done) and r.steps == 3


async def test_exit_after_touching_many_pages_releases_in_steps(capkern_clock: object) -> None:
    step = 64
    pages = 8 * step + 5
    seen: list[int] = []  # the release's progress each time the bystander ran
    toucher_done = trio.Event()

    async def toucher(proc: Process) -> None:
        base = proc.mmap(pages * PAGE_SIZE, "r")
        for p in range(pages):  # read-only zero pages: a page-table entry each
            await proc.read(base + p * PAGE_SIZE, 1)

    async with capkern.boot(ram_pages=8) as k:
        vm = k.vm
        assert vm is not None
        vm.releaser.step = step  # small steps, so a small test shows the stepping

        async def bystander(proc: Process) -> None:
            while not toucher_done.is_set() or vm.releaser.pending:
                seen.append(vm.releaser.steps)
                await trio.sleep(0)

        watcher = k.spawn(bystander)
        await k.wait(k.spawn(toucher))
        toucher_done.set()
        assert (await k.wait(watcher)).ok
        assert vm.releaser.steps == 8 and not vm.releaser.pending
        assert len(set(seen)) >= 5  # it ran between the steps, not only after them
        assert vm.frames.free_count == 8  # every frame back, nothing leaked
    assert step <= RELEASE_STEP


async def test_a_long_access_list_is_checked_in_steps(capkern_clock: object) -> None:
    from capkern.errors import ConfigError
    from capkern.mmu._batch import _CHECK_STEP

    ran_during_check: list[bool] = []  # was the prober inside access() each time?
    checking = trio.Event()
    inside = False

    async def prober(proc: Process) -> None:
        base = proc.mmap(PAGE_SIZE)
        bad = [base] * (4 * _CHECK_STEP) + [-1]  # the bad entry is found last
        nonlocal inside
        checking.set()
        inside = True
        try:
            await proc.access(bad)
        except ConfigError:
            inside = False
            return
        raise AssertionError("a negative address was accepted")

    async def bystander(proc: Process) -> None:
        await checking.wait()
        for _ in range(3):
            ran_during_check.append(inside)
            await trio.sleep(0)

    async with capkern.boot(ram_pages=4) as k:
        b = k.spawn(bystander)
        status = await k.wait(k.spawn(prober))
        assert status.ok, status
        await k.wait(b)
        assert k.stats.faults == 0  # refused before any reference was made
    assert any(ran_during_check)  # the others ran while the list was being checked
