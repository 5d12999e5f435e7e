"""A policy that subclasses a built-in one and overrides ``admit`` or ``remove`` alone is
served right: the pager's batch calls (``admit_many`` at every report, ``remove_many``
for an eviction's victims) reach its own single-page methods, page by page, in order --
whichever built-in policy it extends, even one whose batches are written for speed."""

from __future__ import annotations

from typing import Any

import pytest

from capkern.servers.pager._policy import POLICIES, ReplacementPolicy, make_policy

NAMES = sorted(POLICIES)


def _hooked(name: str) -> tuple[ReplacementPolicy, list[tuple[str, int]]]:
    """The built-in policy ``name``, turned into a subclass logging admit/remove."""
    policy = make_policy(name)
    log: list[tuple[str, int]] = []
    base: Any = type(policy)

    class Hooked(base):  # type: ignore[misc]
        __slots__ = ()

        def admit(self, handle: int) -> None:
            log.append(("admit", handle))
            super().admit(handle)

        def remove(self, handle: int) -> None:
            log.append(("remove", handle))
            super().remove(handle)

    policy.__class__ = Hooked
    return policy, log


@pytest.mark.parametrize("name", NAMES)
def test_a_subclass_overriding_admit_and_remove_sees_every_page(name: str) -> None:
    policy, log = _hooked(name)
    policy.admit_many([5, 3, 5, 9])
    policy.remove_many([3, 11])
    assert log == [("admit", 5), ("admit", 3), ("admit", 5), ("admit", 9),
                   ("remove", 3), ("remove", 11)]
    assert 5 in policy and 9 in policy and 3 not in policy
