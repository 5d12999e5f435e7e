"""The built-in programs check their arguments: bad ones are refused with a clear error
before they run."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import capkern
from capkern import programs


@pytest.mark.parametrize(("prog", "args", "error"), [
    (programs.sequential, (-5,), "pages must be at least 0, not -5"),
    (programs.random_ws, (0,), "pages must be at least 1, not 0"),
    (programs.sequential, (4, -1), "rounds must be at least 0, not -1"),
    (programs.random_ws, (True,), "pages must be an int, not True"),
    (programs.zipf, (8, 10, -1.0), "Zipf exponent"),
    (programs.phased, (8, 2, "s"), "seed must be an int"),
    (programs.echo_client, (-1,), "count must be at least 0"),
    (programs.ping, (2.5,), "rounds must be an int"),
])
def test_builtin_programs_reject_bad_arguments(prog: Any, args: tuple[Any, ...],
                                               error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        programs.check_args(prog, *args)

    async def main() -> capkern.ExitStatus:
        async with capkern.boot(ram_pages=4) as kernel:
            return await kernel.wait(kernel.spawn(prog, *args))

    status = trio.run(main)
    assert status.state == "failed" and status.error is not None and error in status.error


def test_check_args_accepts_good_arguments() -> None:
    programs.check_args(programs.sequential)
    programs.check_args(programs.zipf, 8, 10, 1.5, 7)
    programs.check_args(programs.echo_server)
