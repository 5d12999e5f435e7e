"""Bad arguments at the syscall and spawn boundary are typed errors, raised before any
work: memory reads/writes, badges, pids, and a program's own arguments."""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import Grant, programs
from capkern._proc import Process
from capkern.errors import BadgeError, ConfigError, NoSuchProcess


@pytest.mark.parametrize(("op", "message"), [
    (lambda p, b: p.read(b, -1), "length must not be negative, not -1"),
    (lambda p, b: p.read(b, 1.5), "length must be an int, not float"),
    (lambda p, b: p.read(b, True), "length must be an int, not bool"),
    (lambda p, b: p.read(str(b), 1), "address must be an int, not str"),
    (lambda p, b: p.write(b, "text"), "write needs bytes, not str: encode it first"),
    (lambda p, b: p.write(b, 5), "write needs bytes-like data, not int"),
    (lambda p, b: p.write(b, None), "write needs bytes-like data, not NoneType"),
    (lambda p, b: p.write(b, [1, 2]), "write needs bytes-like data, not list"),
    (lambda p, b: p.write(float(b), b"x"), "address must be an int, not float"),
])
async def test_bad_memory_arguments_are_config_errors(op: Any, message: str) -> None:
    async def prog(proc: Process) -> None:
        base = proc.mmap(4096)
        await proc.write(base, b"kept")
        with pytest.raises(ConfigError, match=message):
            await op(proc, base)
        assert await proc.read(base, 4) == b"kept"  # nothing was written or lost
        await proc.write(base, bytearray(b"ok"))
        await proc.write(base + 2, memoryview(b"!!"))
        assert await proc.read(base, 4) == b"ok!!"

    async with capkern.boot(ram_pages=4) as k:
        status = await k.wait(k.spawn(prog))
        assert status.ok, status.error
        assert k.stats.faults == 1


@pytest.mark.parametrize("badge", ["7", 1.0, True, b"7"])
async def test_a_badge_is_an_int(badge: Any, bare_kernel: capkern.Kernel) -> None:
    async def prog(proc: Process) -> None:
        with pytest.raises(BadgeError, match="a badge is an int, not"):
            proc.mint("ep", "w", badge)

    k = bare_kernel
    ep = k.new_endpoint("e")
    with pytest.raises(BadgeError, match="a badge is an int, not"):
        k.mint(ep, "w", badge=badge)
    with pytest.raises(BadgeError, match="a badge is an int, not"):
        k.spawn(prog, caps={"ep": Grant(ep, "w", badge=badge)})
    assert (await k.wait(k.spawn(prog, caps={"ep": ep}))).ok
    with pytest.raises(BadgeError, match="out of range"):
        k.mint(ep, "w", badge=-1)


@pytest.mark.parametrize("pid", ["x", "1", 1.0, None, True])
async def test_a_pid_is_an_int(pid: Any, bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    with pytest.raises(NoSuchProcess, match="a pid is an int"):
        k.kill(pid)
    with pytest.raises(NoSuchProcess, match="a pid is an int"):
        await k.wait(pid)
    with pytest.raises(NoSuchProcess, match=r"no domain with pid 99$"):
        k.kill(99)


async def test_spawn_binds_a_programs_arguments_before_starting_it() -> None:
    async def two(proc: Process, a: int, b: int = 2) -> None:
        pass

    async with capkern.boot(ram_pages=4) as k:
        before = (k.stats.spawns, len(k.domains()), len(k.capabilities(0)))
        ep = k.new_endpoint("e")
        for args in [(), (1, 2, 3)]:
            with pytest.raises(ConfigError, match="bad arguments for program two"):
                k.spawn(two, *args, caps={"x": Grant(ep, "w")})
        with pytest.raises(ConfigError, match="bad arguments for program sequential"):
            k.spawn(programs.sequential, 1, 2, 3, 4)
        assert (k.stats.spawns, len(k.domains())) == before[:2]  # refused: no trace
        assert len(k.capabilities(0)) == before[2] + 1  # only the new endpoint
        assert (await k.wait(k.spawn(two, 1))).ok
        assert (await k.wait(k.spawn(two, 1, 5))).ok

