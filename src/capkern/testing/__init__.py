"""Adversarial testing kit (UNTRUSTED): attackers, evidence, assertions, pytest plugin."""

from .attackers import *  # noqa: F403
from .attackers import __all__ as _attackers_all

__all__ = [*_attackers_all]
