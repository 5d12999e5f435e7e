"""The REPL's manners, kept apart from its plumbing.

``x?`` topics, help text without a pager, tracebacks cut down to the user's own frames,
the hint shown instead of an unawaited coroutine (all plain functions), and the policy
the pager really runs (asked over its endpoint).
"""

from __future__ import annotations

import inspect
import os
import pydoc
import re
import sys
import textwrap
import traceback
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["HELP_TOPIC", "describe", "displayhook", "running_policy", "short_traceback",
           "unawaited_hint"]

#: a prompt line asking for help IPython-style: ``spawn?``, ``kernel.dump??``
HELP_TOPIC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\?{1,2}\s*$")
_HIDDEN = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
           os.path.dirname(os.path.abspath(trio.__file__)) + os.sep)


def short_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without capkern's or Trio's own frames: what the user's
    statement and programs did, then the error.  (``fulltb()`` shows everything.)"""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_HIDDEN)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] \
        if frames else []
    if isinstance(exc, BaseExceptionGroup):
        for leaf in _leaves(exc):
            lines += traceback.format_exception_only(type(leaf), leaf)
    else:
        lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def unawaited_hint(value: Any) -> str | None:
    """For a coroutine the prompt is about to show (a call missing its ``await``): close
    it -- it never ran -- and say how to run it.  None for anything else."""
    if not inspect.iscoroutine(value):
        return None
    name = value.cr_code.co_name
    value.close()
    return (f"<coroutine {name}(...)> -- not run: it is async, so write "
            f"`await {name}(...)`")


def displayhook(value: Any) -> None:
    """``sys.displayhook`` for the prompt: the hint instead of an unawaited coroutine."""
    hint = unawaited_hint(value)
    if hint is None:
        sys.__displayhook__(value)
    else:
        print(hint)


def describe(obj: Any) -> str:
    """Help text for ``obj``: signature and docstring, without a pager.  A plain function
    (the REPL's own, or a program) is shown as ``name(params)`` and its docstring; the
    rest goes to :mod:`pydoc`."""
    if inspect.isfunction(obj):
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            empty = inspect.Parameter.empty
            sig = sig.replace(parameters=[p.replace(annotation=empty)
                                          for p in sig.parameters.values()],
                              return_annotation=empty)
            kind = "async " if inspect.iscoroutinefunction(obj) else ""
            doc = inspect.getdoc(obj) or "(no docstring)"
            return f"{kind}{obj.__name__}{sig}\n\n" + textwrap.indent(doc, "    ") + "\n"
    return pydoc.plain(pydoc.render_doc(obj, "Help on %s"))


async def running_policy(kernel: Kernel) -> str:
    """The replacement policy the pager reports (it runs a custom policy when booted
    with ``pager=``); the boot option when the pager cannot say."""
    vm = kernel.vm
    if vm is None:
        return "none (paging off)"
    pager = (await vm.server_stats()).get("pager", {})
    policy = pager.get("policy") if isinstance(pager, dict) else None
    return str(policy) if isinstance(policy, str) and policy else kernel.config.policy
