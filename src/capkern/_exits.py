"""How a program's end becomes its domain's exit status (sans-IO).

A program returns an exit code, calls ``proc.exit``/``sys.exit``, raises, or ends with an
exception group from its own nursery; each becomes one :class:`ExitStatus`.  Two things
are not a program's end and pass through (``None``): a cancellation (the kernel's or a
kill's cancel scope takes it) and ``KeyboardInterrupt`` (the user's Ctrl-C ends the run).
"""

from __future__ import annotations

import traceback
from typing import Any

import trio

from ._domain import ExitStatus
from ._proc import ProcessExit
from ._states import DomainState

__all__ = ["ending", "exited"]


def exited(pid: int, name: str, code: Any) -> ExitStatus:
    """An exit status from an exit code (a plain int; anything else is a failure)."""
    if code is None:
        code = 0
    elif isinstance(code, bool):
        code = int(code)
    if type(code) is not int:
        if isinstance(code, int):
            code = int.__int__(code)  # an int subclass: keep only its value
        else:
            return ExitStatus(pid, name, DomainState.EXITED, 1, str(code)[:200])
    if not -(1 << 63) <= code < (1 << 63):
        return ExitStatus(pid, name, DomainState.EXITED, 1, "exit code out of range")
    return ExitStatus(pid, name, DomainState.EXITED, code)


def ending(pid: int, name: str, exc: BaseException) -> ExitStatus | None:
    """The exit status for what a program raised (``failed`` with a summary for a
    crash); None if it must pass through."""
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
        return None
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split(trio.Cancelled)[1]
        if rest is None or rest.subgroup(KeyboardInterrupt) is not None:
            return None
        exits, errors = rest.split((ProcessExit, SystemExit))
        if errors is not None or exits is None:
            return _crashed(pid, name, rest)
        exc = _leaves(exits)[0]
    if isinstance(exc, ProcessExit | SystemExit):
        return exited(pid, name, exc.code)
    return _crashed(pid, name, exc)


def _crashed(pid: int, name: str, exc: BaseException) -> ExitStatus:
    leaves = _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    summary = "; ".join(_summary(leaf) for leaf in leaves)
    return ExitStatus(pid, name, DomainState.FAILED, None, summary)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _summary(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
