"""Naming a server program so another OS process can load it (trusted, no imports of it).

A child process is a fresh interpreter: it cannot be handed a Python function, only a
name.  A program is therefore named by ``module:qualified.name`` (it must be importable
from the child) plus msgpack-able arguments.  :class:`ServerSpec` names a *factory*
called with ``args`` to build the program (how the attacker kit's configurable pagers
travel); a plain top-level ``async def`` is named by itself.  A closure or lambda has
no such name and is refused with a :class:`~capkern.errors.ConfigError` saying why.

Resolving a spec in the parent never imports anything: the kernel only checks names; the
child imports the module (in task mode, the program object is already in hand).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _wire as wire
from ..errors import ConfigError, MessageError

__all__ = ["ServerSpec", "load_target", "parse_tcp", "spec_of"]


def parse_tcp(url: Any) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); a ConfigError for anything else."""
    if not isinstance(url, str) or not url.startswith("tcp://"):
        raise ConfigError(f"a remote server is named tcp://HOST:PORT, not {url!r}")
    host, sep, port = url[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{url!r} is not tcp://HOST:PORT with a port in 1..65535")
    return host, int(port)


@dataclass(frozen=True)
class ServerSpec:
    """``target`` (``module:qualname`` of a factory) called with ``args`` makes a program.

    A spec is itself a program (``await spec(proc, *boot_args)``), so it can be given
    to ``boot(pager=...)`` in either isolation mode.
    """

    target: str
    args: tuple[Any, ...] = ()
    #: where the child's reports (attacker evidence) go in the parent; never sent
    evidence: Any = None

    def __post_init__(self) -> None:
        _check_target(self.target)
        try:
            wire.encode(list(self.args), wire.Limits())
        except MessageError as exc:
            raise ConfigError(f"arguments of {self.target} cannot cross to a child "
                              f"process (msgpack only): {exc}") from None

    async def __call__(self, proc: Any, *boot_args: Any) -> Any:
        """Run in this process (task mode): the factory also gets the evidence object,
        which in process mode stays in the parent (filled by the proxy)."""
        factory = load_target(self.target)
        program = (factory(*self.args) if self.evidence is None
                   else factory(*self.args, evidence=self.evidence))
        return await program(proc, *boot_args)


def _check_target(target: Any) -> None:
    if not isinstance(target, str) or target.count(":") != 1:
        raise ConfigError(f"a server program is named 'module:qualname', not {target!r}")
    module, qualname = target.split(":")
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"{target!r} is not an importable name")


def spec_of(program: Any, kind: str = "program") -> tuple[str, list[Any], Any]:
    """``(target, factory_args, evidence)`` naming ``program`` for a child process.

    ``factory_args`` is None-free: an empty list means "the target *is* the program".
    Raises :class:`ConfigError` for anything a fresh interpreter could not load.
    """
    if isinstance(program, ServerSpec):
        return program.target, ["factory", list(program.args)], program.evidence
    attached = getattr(program, "capkern_spec", None)
    if isinstance(attached, ServerSpec):
        return attached.target, ["factory", list(attached.args)], attached.evidence
    error = getattr(program, "capkern_spec_error", None)
    if isinstance(error, str):
        raise ConfigError(f"the {kind} cannot run in a child process: {error}")
    if isinstance(program, str):
        _check_target(program)
        return program, ["program"], None
    module = getattr(program, "__module__", None)
    qualname = getattr(program, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        why = ("a lambda" if qualname == "<lambda>" else
               "a closure (defined inside a function)" if qualname and "<locals>" in qualname
               else "not a named module-level function")
        raise ConfigError(
            f"the {kind} {program!r} cannot run in a child process: it is {why}, so a fresh "
            "interpreter cannot import it. Define it at module level, or give a "
            "capkern.isolation.ServerSpec('module:factory', args)")
    if module == "__main__":
        raise ConfigError(f"the {kind} {qualname} lives in __main__, which a child process "
                          "cannot import; move it to a module")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not program:
        raise ConfigError(f"the {kind} {module}:{qualname} is not reachable by that name")
    return f"{module}:{qualname}", ["program"], None


def load_target(target: str) -> Callable[..., Any]:
    """Import ``module:qualname`` (in the process that will run it)."""
    _check_target(target)
    module, qualname = target.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]
