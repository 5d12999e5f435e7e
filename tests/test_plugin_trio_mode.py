"""The pytest plugin in a user's project: a clear failure when trio mode is off, fixtures
that run when it is on (or the test is marked), and a docstring for every fixture."""

from __future__ import annotations

import pytest

USER_TEST = '''
import pytest

async def test_boots(kernel):
    assert kernel.stats.spawns == 3

@pytest.mark.trio
async def test_marked(kernel):
    assert kernel.stats.spawns == 3

def test_plain():
    assert True
'''


pytest_plugins = ["pytester"]


class _Run:
    def __init__(self, result: pytest.RunResult) -> None:
        self.returncode = int(result.ret)
        self.stdout = "\n".join(result.outlines)


def _pytest(pytester: pytest.Pytester, ini: str, *args: str) -> _Run:
    """Run pytest in-process on a user's project holding ``USER_TEST``."""
    pytester.makeini(ini)
    pytester.makepyfile(test_user=USER_TEST)
    return _Run(pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", *args))


def test_trio_mode_off_fails_with_the_fix(pytester: pytest.Pytester) -> None:
    out = _pytest(pytester, "[pytest]\ntrio_mode = false\n")
    assert out.returncode == 1, out.stdout
    assert "test_user.py::test_boots is an async test using capkern's fixtures" in out.stdout
    assert "trio_mode = true" in out.stdout and "@pytest.mark.trio" in out.stdout
    assert "2 passed, 1 error" in out.stdout  # the marked test and the plain one ran


def test_trio_mode_on_runs_the_fixtures(pytester: pytest.Pytester) -> None:
    out = _pytest(pytester, "[pytest]\ntrio_mode = true\n")
    assert out.returncode == 0, out.stdout
    assert "3 passed" in out.stdout


def test_every_fixture_is_documented(pytester: pytest.Pytester) -> None:
    out = _pytest(pytester, "[pytest]\ntrio_mode = true\n", "--fixtures")
    assert out.returncode == 0, out.stdout
    section = out.stdout.split("from capkern.testing.plugin")[1]
    section = section.split("\n", 1)[1].split("\n---")[0]
    for name in ("capkern_clock", "evidence", "kernel_factory", "kernel"):
        _, _, rest = ("\n" + section).partition(f"\n{name} -- ")
        assert rest, f"{name} not listed"
        doc = rest.split("\n")[1].strip()
        assert doc and "no docstring" not in doc, name


def test_without_pytest_trio_it_says_to_install_it(pytester: pytest.Pytester) -> None:
    out = _pytest(pytester, "[pytest]\n", "-p", "no:trio")
    assert out.returncode == 1, out.stdout
    assert "which need pytest-trio" in out.stdout and "pip install pytest-trio" in out.stdout
