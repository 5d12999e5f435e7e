"""Fixtures shared by the test suite (the capkern pytest plugin adds ``kernel``,
``kernel_factory``, ``evidence`` and ``capkern_clock``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import capkern


@pytest.fixture
async def bare_kernel() -> AsyncIterator[capkern.Kernel]:
    """A booted kernel without paging: no crypt, pager or block device domains, so a
    test sees only the domains it spawns.  Leaving the test shuts it down (its domains
    are cancelled) as leaving ``async with capkern.boot(paging=False)`` would."""
    async with capkern.boot(paging=False) as kernel:
        yield kernel
