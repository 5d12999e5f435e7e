"""``capkern demo --isolation process``: every property holds with the pager and disk in
child OS processes, and the row that kills the pager's OS process mid-run shows a new
pid and no bystander failing."""

from __future__ import annotations

import io
import re

from rich.console import Console

from capkern._demo import DemoOptions, run_demo


def test_demo_in_process_mode_holds_every_property_and_survives_a_kill() -> None:
    out = io.StringIO()
    opts = DemoOptions(ram_pages=8, processes=2, pages=12, quick=True, isolation="process")
    code = run_demo(opts, Console(file=out, width=200))
    text = out.getvalue()
    assert code == 0, text
    assert "every property held" in text
    killed = re.search(r"pager os pid (\d+) -> (\d+); bystanders ok: yes", text)
    assert killed is not None, text
    assert killed.group(1) != killed.group(2)
