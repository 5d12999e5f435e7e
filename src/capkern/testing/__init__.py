"""Adversarial testing kit (UNTRUSTED): attackers, evidence, assertions, pytest plugin."""

from ._assertions import *  # noqa: F403
from ._assertions import __all__ as _assertions_all
from ._attackers import *  # noqa: F403
from ._attackers import __all__ as _attackers_all

__all__ = [*_attackers_all, *_assertions_all]
