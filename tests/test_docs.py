"""The README's library example and the adversarial docs' examples work as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S)


def _run_example(code: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_readme_examples_run(tmp_path: Path) -> None:
    first, policy, pager_sets = _blocks("README.md")
    out = _run_example(pager_sets, tmp_path)  # one lying pager in a mirror: all ok
    assert "[True, True, True]" in out and "['pager0']" in out
    assert len(first.splitlines()) <= 20 and len(policy.splitlines()) <= 25
    assert "state='exited', code=0" in _run_example(first, tmp_path)
    # the custom-policy example: MRU beats CLOCK on a cyclic scan one page over RAM
    counts = dict(line.split(" page-ins: ") for line in
                  _run_example(policy, tmp_path).splitlines())
    assert set(counts) == {"mru", "clock"}
    assert int(counts["mru"]) < int(counts["clock"]), counts


def test_adversarial_doc_examples_pass_with_only_the_plugin(tmp_path: Path) -> None:
    blocks = _blocks("docs/adversarial.md")
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        (tmp_path / f"test_doc_{i}.py").write_text(block)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
