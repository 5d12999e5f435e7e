"""Loud insecurity: the null cipher warns at boot, shows on the kernel, in ps() and the
demo header, and the adversarial kit refuses to call such a run confidential."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
import trio
from rich.console import Console

import capkern
from capkern import _repl as repl
from capkern import programs
from capkern._demo import DemoOptions, paging_header
from capkern.testing import (
    Evidence,
    InsecureRun,
    Snoop,
    assert_no_plaintext,
    attack_pager,
    run_workload,
)

pytestmark = pytest.mark.filterwarnings("ignore::capkern.InsecureWarning")


async def test_null_cipher_warns_at_boot_and_shows_on_the_kernel(capkern_clock: Any) -> None:
    with pytest.warns(capkern.InsecureWarning, match="PLAINTEXT"):
        async with capkern.boot(cipher="null") as kernel:
            assert kernel.insecure and "null" in kernel.insecure[0]
            assert "INSECURE" in repr(kernel)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
async def test_a_secure_boot_is_quiet(cipher: str, capkern_clock: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", capkern.InsecureWarning)
        async with capkern.boot(cipher=cipher) as kernel:
            assert kernel.insecure == ()
            assert "INSECURE" not in repr(kernel)


async def test_without_paging_the_cipher_is_never_used(capkern_clock: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", capkern.InsecureWarning)
        async with capkern.boot(cipher="null", paging=False) as kernel:
            assert kernel.insecure == ()


async def test_kit_refuses_to_call_a_null_cipher_run_confidential(capkern_clock: Any) -> None:
    ev = Evidence()
    async with capkern.boot(cipher="null", ram_pages=4,
                            pager=attack_pager(Snoop(), evidence=ev)) as kernel:
        work = await run_workload(kernel, programs.sequential, 8, 1, seeds=[1])
    with pytest.raises(InsecureRun, match=r"INSECURE.*null"):
        assert_no_plaintext(ev, work.written)
    # the same check of a secure run passes, and an old insecure boot does not taint it
    ev2 = Evidence()
    async with capkern.boot(ram_pages=4, pager=attack_pager(Snoop(), evidence=ev2)) as k2:
        work2 = await run_workload(k2, programs.sequential, 8, 1, seeds=[1])
    assert_no_plaintext(ev2, work2.written)


async def test_evidence_made_while_an_insecure_kernel_runs_is_refused(
        capkern_clock: Any) -> None:
    async with capkern.boot(cipher="null", ram_pages=4) as kernel:
        ev = Evidence()  # created after the boot, while it runs
        ev.record(b"x" * 64)
        assert ev.insecure_runs()
        with pytest.raises(InsecureRun):
            assert_no_plaintext(ev, [b"y" * 64])
        assert kernel.insecure


def test_ps_says_the_kernel_is_insecure() -> None:
    async def main() -> str:
        out = io.StringIO()
        host = repl._Host({"ram_pages": 8, "cipher": "null"})
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            repl._namespace(host, out)["ps"]()
            nursery.cancel_scope.cancel()
        return out.getvalue()

    assert "INSECURE kernel" in trio.run(main)


@pytest.mark.parametrize("cipher,loud", [("null", True), ("aes-256-gcm", False)])
def test_demo_header_says_the_run_is_insecure(cipher: str, loud: bool) -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    paging_header(DemoOptions(cipher=cipher), console)
    assert ("INSECURE" in console.export_text()) is loud


def test_demo_never_says_a_null_cipher_run_held() -> None:
    from capkern._demo import run_demo

    console = Console(file=io.StringIO(), width=200, record=True)
    opts = DemoOptions(cipher="null", processes=2, pages=10, ram_pages=8, quick=True)
    assert run_demo(opts, console) == 1
    text = console.export_text()
    assert "FAILED INSECURE" in text and "every property held" not in text
