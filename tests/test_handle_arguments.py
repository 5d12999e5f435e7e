"""A malicious domain's arguments to the syscalls of its Process handle: every bad one is a
typed error, and nothing it tries leaves kernel state the operator's tools cannot read."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import capkern
from capkern import Process


async def test_domain_bad_arguments_are_typed_errors(bare_kernel: capkern.Kernel) -> None:
    seen: dict[str, str] = {}

    async def prober(proc: Process) -> None:
        ep = proc.new_endpoint("mine")
        attempts: dict[str, Any] = {
            "copy-rights": lambda: proc.copy(ep, "rwz"),
            "copy-none": lambda: proc.copy(ep, None),  # type: ignore[arg-type]
            "mint-range": lambda: proc.mint(ep, 99, 3),  # type: ignore[arg-type]
            "copy-name": lambda: proc.copy(ep, "r", name=5),  # type: ignore[arg-type]
            "mint-name": lambda: proc.mint(ep, "r", 3, name=b"x"),  # type: ignore[arg-type]
            "name-slot-list": lambda: proc.name_slot(ep, ["x"]),  # type: ignore[arg-type]
            "name-slot-int": lambda: proc.name_slot(ep, 7),  # type: ignore[arg-type]
            "name-slot-empty": lambda: proc.name_slot(ep, ""),
            "slot-list": lambda: proc.slot(["x"]),  # type: ignore[arg-type]
            "ep-bytes-name": lambda: proc.new_endpoint(b"x"),  # type: ignore[arg-type]
            "ep-contract": lambda: proc.new_endpoint("c", contract=object()),  # type: ignore[arg-type]
            "ntfn-name": lambda: proc.new_notification(["n"]),  # type: ignore[arg-type]
            "save-caller-name": lambda: proc.save_caller(3),  # type: ignore[arg-type]
            "nbsend-caps-int": lambda: proc.nbsend(ep, "x", caps=5),  # type: ignore[arg-type]
            "nbsend-caps-str": lambda: proc.nbsend(ep, "x", caps="mine"),
        }
        for what, attempt in attempts.items():
            try:
                attempt()
                seen[what] = "accepted"
            except capkern.CapkernError as exc:
                seen[what] = type(exc).__name__
        await trio.sleep_forever()

    k = bare_kernel
    pid = k.spawn(prober)
    await trio.testing.wait_all_tasks_blocked()
    assert k.status(pid) is None  # nothing crashed the prober either
    assert "accepted" not in seen.values(), seen
    assert seen["slot-list"] == "InvalidSlot"
    assert seen["nbsend-caps-int"] == seen["nbsend-caps-str"] == "MalformedMessage"
    # and it could not leave anything in kernel state that breaks the operator's tools
    dump = json.loads(json.dumps(k.dump()))
    (mine,) = [d for d in dump["domains"] if d["pid"] == pid]
    assert [c["name"] for c in mine["caps"]] == ["mine"]
