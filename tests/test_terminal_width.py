"""Tables fit an 80-column terminal without cutting a name or a number."""

from __future__ import annotations

import io
import re

from rich.console import Console

from capkern._demo import RunResult, _attacks, paging_table
from capkern._domain import ExitStatus
from capkern.testing._attackers import Evidence


def test_paging_table_fits_80_columns_with_every_attacker_name() -> None:
    ok = ExitStatus(4, "ws0", "exited", 0)
    big = {"faults": 123456, "seals": 123456, "unseals": 123456}
    runs = [RunResult(name, [ok] * 12, big, Evidence(), False, tried=123456, wrong_reads=12,
                      detected=654321)
            for name in ["honest (snooping)", *(n for n, _ in _attacks(False))]]
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(paging_table(runs))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    for run in runs:  # every row on one line, whole
        (row,) = [line for line in lines if re.match(re.escape(run.name) + " +12/12 ", line)]
        assert row.split()[-9:] == ["12/12", "123456", "123456", "123456", "123456",
                                    "654321", "12", "0", "B"]
