"""Naming server programs so a fresh interpreter can load them (ServerSpec, spec_of),
and rebuilding the kit's tampers from plain data (tamper_spec / make_tamper)."""

from __future__ import annotations

from typing import Any

import pytest

import capkern
from capkern import programs
from capkern.errors import ConfigError
from capkern.isolation import ServerSpec
from capkern.isolation._spec import load_target, spec_of
from capkern.servers.pager._server import pager_server
from capkern.testing import (
    After,
    BitFlip,
    Evidence,
    Only,
    PrevBoot,
    Sometimes,
    Truncate,
    assert_no_wrong_reads,
    disk_attacker,
    make_tamper,
    run_workload,
    tamper_spec,
)


def test_a_module_level_program_is_named_by_module_and_qualname() -> None:
    assert spec_of(pager_server)[:2] == ("capkern.servers.pager._server:pager_server",
                                         ["program"])
    assert load_target("capkern.servers.pager._server:pager_server") is pager_server


@pytest.mark.parametrize("target", ["nocolon", "a:b:c", ":x", "m:", "m:<lambda>", 42])
def test_bad_targets_are_config_errors(target: Any) -> None:
    with pytest.raises(ConfigError):
        ServerSpec(target)


def test_spec_arguments_must_be_plain_data() -> None:
    with pytest.raises(ConfigError, match="msgpack"):
        ServerSpec("capkern.testing._attackers:build_attack_pager", (object(),))


def test_a_program_in_main_is_refused() -> None:
    async def prog(proc: capkern.Process) -> None:
        return None

    prog.__module__ = "__main__"
    prog.__qualname__ = "prog"
    with pytest.raises(ConfigError, match="__main__"):
        spec_of(prog)


@pytest.mark.parametrize("tamper", [BitFlip("tag", seed=3), Truncate(200),
                                    PrevBoot([b"x" * 10]),
                                    Only(BitFlip("nonce"), labels=["fetch"]),
                                    After(Sometimes(Truncate(1), 0.5, seed=2), 3)],
                         ids=lambda t: type(t).__name__)
def test_kit_tampers_round_trip_through_plain_data(tamper: Any) -> None:
    spec = tamper_spec(tamper)
    capkern._wire.encode(spec, capkern._wire.Limits())  # crosses as msgpack
    rebuilt = make_tamper(spec)
    assert type(rebuilt) is type(tamper) and rebuilt.name == tamper.name
    assert tamper_spec(rebuilt) == spec


def test_unknown_tamper_names_are_refused() -> None:
    with pytest.raises(ValueError):
        make_tamper(["Evidence", [], {}])
    with pytest.raises(ValueError):
        make_tamper(["os", [], {}])


async def test_a_disk_spec_runs_in_task_mode_with_the_tests_evidence(capkern_clock: Any) -> None:
    evidence = Evidence()
    async with capkern.boot(ram_pages=5, blockdev_server=disk_attacker("DiskReplay", evidence),
                            pager_deadline=1.0) as kernel:
        statuses = await run_workload(kernel, programs.sequential, 12, 3, seeds=range(2))
    assert_no_wrong_reads(statuses)
    assert evidence.seen  # the backend built from the spec recorded into our evidence
    with pytest.raises(ValueError):
        disk_attacker("DiskEraser")
