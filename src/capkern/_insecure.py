"""Loud insecurity: a boot that gives up a security property says so, everywhere.

``boot(cipher="null")`` exists as a benchmark baseline: pages reach the pager in
plaintext (its keyed tag still refuses tampered, stale and misplaced pages, so integrity,
freshness and binding hold; confidentiality does not).  Such a boot

* warns with :class:`InsecureWarning` (exported as ``capkern.InsecureWarning``);
* carries the reasons in ``kernel.insecure`` (empty when secure) and its ``repr``;
* is recorded here, so the adversarial kit can refuse to call a run secure while an
  insecure kernel was up (:func:`insecure_since`): ``assert_no_plaintext`` raises
  instead of passing.

Kernel memory only, no I/O.
"""

from __future__ import annotations

import itertools
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import BootConfig

__all__ = ["InsecureWarning", "boot_ended", "boot_started", "insecure_since", "reasons",
           "serial"]


class InsecureWarning(UserWarning):
    """A kernel was booted with an option that gives up a security property."""


_serials = itertools.count(1)
_last = 0
_live: dict[int, tuple[str, ...]] = {}  # insecure boots still running
_ended: list[tuple[int, tuple[str, ...]]] = []  # insecure boots that ended (serial, why)
_KEEP = 1024


def reasons(config: BootConfig) -> tuple[str, ...]:
    """Why a boot with ``config`` is insecure (empty: it is not)."""
    out = []
    if config.paging and config.cipher == "null":
        out.append("cipher 'null': pages reach the untrusted pager in PLAINTEXT "
                   "(no confidentiality; a benchmark baseline only)")
    return tuple(out)


def serial() -> int:
    """The serial number of the latest boot (0: none yet)."""
    return _last


def boot_started(config: BootConfig) -> int:
    """Record a boot; warn if it is insecure.  Returns its serial number."""
    global _last
    _last = number = next(_serials)
    why = reasons(config)
    if why:
        _live[number] = why
        warnings.warn(InsecureWarning("INSECURE boot: " + "; ".join(why)), stacklevel=4)
    return number


def boot_ended(number: int) -> None:
    why = _live.pop(number, None)
    if why:
        _ended.append((number, why))
        del _ended[:-_KEEP]


def insecure_since(number: int) -> list[str]:
    """Reasons of insecure boots started after boot ``number`` or still running."""
    out = [why for n, why in _ended if n > number]
    out += list(_live.values())
    return [r for why in out for r in why]
