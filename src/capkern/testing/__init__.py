"""Adversarial testing kit (UNTRUSTED): attackers, evidence, assertions, pytest plugin."""

from .assertions import *  # noqa: F403
from .assertions import __all__ as _assertions_all
from .attackers import *  # noqa: F403
from .attackers import __all__ as _attackers_all

__all__ = [*_attackers_all, *_assertions_all]
