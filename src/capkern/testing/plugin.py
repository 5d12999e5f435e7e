"""The capkern pytest plugin (entry point ``pytest11: capkern``): installing capkern is
enough to get these fixtures in any test suite.

* ``capkern_clock`` -- an autojump ``MockClock``; pytest-trio runs a test on it when the
  test requests it, so deadlines and hangs cost no real time.
* ``evidence`` -- a fresh :class:`~capkern.testing.Evidence`.
* ``kernel_factory`` -- ``async with kernel_factory(pager=..., ram_pages=...) as k``.
* ``kernel`` -- a kernel booted with the defaults at ``ram_pages=16``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio.testing

from ..kernel import Kernel, boot
from .attackers import Evidence

KernelFactory = Callable[..., AbstractAsyncContextManager[Kernel]]


@pytest.fixture
def capkern_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def evidence() -> Evidence:
    return Evidence()


@pytest.fixture
def kernel_factory() -> KernelFactory:
    def factory(**options: Any) -> AbstractAsyncContextManager[Kernel]:
        options.setdefault("ram_pages", 16)
        return boot(**options)

    return factory


@pytest.fixture
async def kernel(capkern_clock: trio.testing.MockClock) -> AsyncIterator[Kernel]:
    async with boot(ram_pages=16) as k:
        yield k
