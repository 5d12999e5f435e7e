"""The capkern pytest plugin (entry point ``pytest11: capkern``): installing capkern is
enough to get these fixtures in any test suite.

* ``capkern_clock`` -- an autojump ``MockClock``; pytest-trio runs a test on it when the
  test requests it, so deadlines and hangs cost no real time.
* ``evidence`` -- a fresh :class:`~capkern.testing.Evidence`.
* ``kernel_factory`` -- ``async with kernel_factory(pager=..., ram_pages=...) as k``.
* ``isolation`` -- parametrizes a test over ``"task"`` and ``"process"``.
* ``kernel`` -- a kernel booted with the defaults at ``ram_pages=16``, on the autojump
  clock (a test that asks for ``kernel`` and no clock of its own runs on
  ``capkern_clock``; pytest-trio only looks at the test's own arguments for a clock, so
  the plugin adds it there).

The fixtures are async and need pytest-trio's trio mode (``trio_mode = true`` under
``[tool.pytest.ini_options]``, or ``@pytest.mark.trio`` on each test); a test that uses
them without it fails at setup with a message saying so, rather than being skipped or
failing somewhere inside pytest.

Only this module imports pytest: ``import capkern`` and ``import capkern.testing`` work
without pytest or pytest-trio installed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

from .._root import boot
from ..kernel import Kernel
from ._attackers import Evidence

KernelFactory = Callable[..., AbstractAsyncContextManager[Kernel]]
_CLOCK_FIXTURE = "capkern_clock"


@pytest.fixture
def capkern_clock() -> trio.testing.MockClock:
    """An autojump clock: time jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def evidence() -> Evidence:
    """A fresh :class:`~capkern.testing.Evidence`: what an attacker tried, what was
    refused, and any confinement breach; pass it to ``attack_pager(..., evidence=)``."""
    return Evidence()


@pytest.fixture(params=["task", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Run a scenario in both isolation modes: ``kernel_factory(isolation=isolation)``.

    In ``"process"`` mode the untrusted servers are real child processes, which an
    autojump clock cannot see: such a test must not ask for ``capkern_clock``."""
    return str(request.param)


@pytest.fixture
def kernel_factory() -> KernelFactory:
    """``async with kernel_factory(pager=..., ram_pages=..., **boot_options) as k``."""

    def factory(**options: Any) -> AbstractAsyncContextManager[Kernel]:
        options.setdefault("ram_pages", 16)
        return boot(**options)

    return factory


@pytest.fixture
async def kernel(capkern_clock: trio.testing.MockClock) -> AsyncIterator[Kernel]:
    """A kernel booted with the defaults at ``ram_pages=16`` on the autojump clock
    (deadlines and hangs cost no real time); shut down when the test ends."""
    async with boot(ram_pages=16) as k:
        yield k


_FIXTURES = ("kernel", "kernel_factory", "capkern_clock", "evidence")
TRIO_MODE_MISSING = """\
capkern: {test} is an async test using capkern's fixtures, but pytest-trio's trio mode
is off, so nothing would run it.  Turn it on for the project:

    [tool.pytest.ini_options]        # pyproject.toml (or [pytest] in pytest.ini)
    trio_mode = true

or mark the test with @pytest.mark.trio."""
PYTEST_TRIO_MISSING = """\
capkern: {test} is an async test using capkern's fixtures, which need pytest-trio:
pip install pytest-trio, then set trio_mode = true under [tool.pytest.ini_options]."""


def trio_mode_problem(item: pytest.Item) -> str | None:
    """Why an async test using capkern's fixtures would not run under Trio, or None."""
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return None
    if not set(_FIXTURES) & set(getattr(item, "fixturenames", ())):
        return None
    if item.get_closest_marker("trio") is not None:
        return None
    try:
        on = item.config.getini("trio_mode")
    except ValueError:  # the ini option is pytest-trio's: it is not installed
        return PYTEST_TRIO_MISSING.format(test=item.nodeid)
    if str(on).lower() in ("true", "1", "yes", "on"):
        return None
    return TRIO_MODE_MISSING.format(test=item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    problem = trio_mode_problem(item)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _needs_clock(item: pytest.Item) -> bool:
    """The test uses ``kernel`` but names no clock among its own arguments."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None or "kernel" not in getattr(item, "fixturenames", ()):
        return False
    if hasattr(getattr(item, "obj", None), "hypothesis"):
        return False
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return False
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    return _CLOCK_FIXTURE in funcargs and not any(
        isinstance(funcargs.get(name), trio.abc.Clock) for name in info.argnames)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Runs before pytest-trio wraps the test: hand ``capkern_clock`` to the test's
    # arguments (so pytest-trio runs it on that clock) and drop it again before the
    # test function itself is called.
    if _needs_clock(item):
        original = item.obj  # type: ignore[attr-defined]

        @functools.wraps(original)
        async def with_clock(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop(_CLOCK_FIXTURE, None)
            return await original(*args, **kwargs)

        info = item._fixtureinfo  # type: ignore[attr-defined]
        item.obj = with_clock  # type: ignore[attr-defined]
        item._fixtureinfo = dataclasses.replace(  # type: ignore[attr-defined]
            info, argnames=(*info.argnames, _CLOCK_FIXTURE))
    yield
