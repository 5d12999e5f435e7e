"""``capkern sim`` and ``capkern lab`` as a person types them (OSTEP paging-policy.py
style): per-access output, totals, JSON, traces, user policies, clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from capkern._cli import main
from capkern.servers.pager import ReplacementPolicy


class NewestFirst(ReplacementPolicy):
    """A user's policy, loaded by ``--policy module:Class``: evict the newest page."""

    name = "newest"

    def __init__(self) -> None:
        self.pages: dict[int, None] = {}

    def admit(self, handle: int) -> None:
        self.pages[handle] = None

    def remove(self, handle: int) -> None:
        self.pages.pop(handle, None)

    def referenced(self, handles: Iterable[int]) -> None:
        pass

    def choose(self, n: int) -> list[int]:
        return list(reversed(self.pages))[:n]

    def __contains__(self, handle: object) -> bool:
        return handle in self.pages

    def __len__(self) -> int:
        return len(self.pages)


def sim(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["sim", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compute_prints_each_access_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = sim(capsys, "-a", "1,2,3,4,1,2,5,1,2,3,4,5", "-f", "3", "-c")
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 12
    assert lines[3].split()[:4] == ["4", "4", "MISS", "1"]  # page 4 evicts page 1
    assert "[4 2 3]" in lines[3]
    assert lines[7].split()[2] == "hit"
    assert "FINALSTATS hits 3   misses 9   hitrate 25.00" in out


def test_json_for_machines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = sim(capsys, "-w", "silberschatz", "-p", "OPT", "-f", "3", "--json")
    data = json.loads(out)
    assert code == 0 and data["faults"] == 9 and data["policy"] == "opt"
    assert data["kernel"]["faults"] == 9 and data["kernel"]["seals"] > 0  # really sealed


def test_trace_file_and_named_workload_with_seed(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("# Belady\n1 2 3 4\n1,2,5\n1 2 3 4 5\n")
    assert json.loads(sim(capsys, "--trace", str(trace), "-f", "4", "--json")[1])["faults"] == 10
    a = sim(capsys, "-w", "heavy:n=300,pages=40", "--seed", "5", "-p", "random", "--json")
    b = sim(capsys, "-w", "heavy:n=300,pages=40", "--seed", "5", "-p", "random", "--json")
    assert json.loads(a[1])["faults"] == json.loads(b[1])["faults"]


def test_user_policy_by_module_and_class(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = sim(capsys, "-a", "1,2,3,1,2,3", "-f", "2", "-p",
                       f"{__name__}:NewestFirst", "--json")
    # newest-first keeps page 1 resident: 1 2 3(evicts 2) 1 hit 2(evicts 3) 3(evicts 2)
    assert code == 0 and json.loads(out)["faults"] == 5 and json.loads(out)["policy"] == "newest"


def test_evict_batch_is_warned(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = sim(capsys, "-w", "belady", "--evict-batch", "2")
    assert code == 0 and "not the textbook ones" in err


@pytest.mark.parametrize("args", [
    ["-a", "1,x"], ["-a", "1,-2"], ["-p", "nope"], ["-p", "os:path"], ["-p", "no.such:X"],
    ["-f", "0"], ["--trace", "/nonexistent/t"], ["-w", "heavy:n=abc"], ["-w", "belady:n=1"],
])
def test_bad_input_is_a_one_line_error(args: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = sim(capsys, *args)
    assert code == 2 and out == "" and err.startswith("capkern sim: error:")
    assert "Traceback" not in err


def test_lab_table_csv_json_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    csv_path, json_path, png = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "c.png"
    code = main(["lab", "-w", "belady", "-p", "fifo", "-p", "lru", "-f", "1-6", "-j", "1",
                 "--csv", str(csv_path), "--json", str(json_path), "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0 and "10!" in out and max(map(len, out.splitlines())) <= 80
    assert csv_path.read_text().count("\n") == 13
    assert json.loads(json_path.read_text())["anomalies"] == [["belady", "fifo", 4]]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lab_bad_frames(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "-w", "belady", "-f", "0-3", "-j", "1"]) == 2
    assert "error" in capsys.readouterr().err


def test_several_processes_from_pid_page_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = sim(capsys, "-a", "1:0,1:1,2:0,1:0,2:1,2:0", "-f", "4", "-p", "local-lru")
    assert code == 0 and "faults per process: pid 1 2, pid 2 2" in out
    code, _, err = sim(capsys, "-a", "1:0,2:0", "-c")
    assert code == 2 and "one process" in err
