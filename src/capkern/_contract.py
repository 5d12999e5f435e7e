"""Server contracts: the labels an endpoint accepts, their body schema and replies.

Sans-IO: a :class:`Contract` is plain data plus pure validation functions.  The kernel
attaches a contract to an endpoint when the serving domain creates it, and checks every
message at the sender's trap and every reply at the replier's trap.  An out-of-contract
request never reaches the server (the caller gets :class:`ContractViolation`); an
out-of-contract reply never reaches the caller as data (the caller gets
:class:`ContractViolation`, the replier too), so neither side can confuse the other.

Reply convention on contracted endpoints: label ``"ok"`` with the operation's reply
body, or label ``"error"`` with ``{"reason": str, "detail": str}`` where ``reason`` is
one of the operation's declared error reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, ContractViolation

__all__ = [
    "Any_",
    "Bool",
    "Bytes",
    "Contract",
    "Float",
    "Int",
    "ListOf",
    "Null",
    "Op",
    "Opt",
    "Spec",
    "Str",
    "Struct",
]


#: a schema may nest as deep as a message may (``Limits.max_depth``'s default) ...
MAX_SCHEMA_DEPTH = 32
#: ... and hold this many nodes in all its operations
MAX_SCHEMA_NODES = 4096


class Spec:
    """A schema node.  ``valid`` answers fast (no strings built: every message on a
    contracted endpoint goes through it); ``check`` raises :class:`ContractViolation`
    naming the path, and runs only to explain a value ``valid`` refused.

    The two must agree: ``valid`` is all that stands between a body and its receiver.
    So a subclass that refines ``check`` without writing its own ``valid`` gets the
    generic ``valid`` (which runs its ``check``), never its parent's fast one -- that
    one does not know the refinement and would let through what ``check`` refuses."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

        def owner(name: str) -> int:  # where in the MRO the method comes from
            return next(i for i, c in enumerate(cls.__mro__) if name in c.__dict__)

        if owner("check") < owner("valid"):  # (a mixin's check counts too)
            cls.valid = Spec.valid  # type: ignore[method-assign]

    def valid(self, value: Any) -> bool:
        try:  # a user's Spec that only defines check still works (slowly)
            self.check(value, "")
        except ContractViolation:
            return False
        return True

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def enforce(self, value: Any, path: str) -> None:
        """Raise :class:`ContractViolation` (naming the path) unless ``value`` fits."""
        if not self.valid(value):
            self.check(value, path)
            raise ContractViolation(f"{path}: does not fit {self.describe()}")  # pragma: no cover

    def describe(self) -> str:
        return type(self).__name__.lower()


def _fail(path: str, want: str, value: Any) -> ContractViolation:
    return ContractViolation(f"{path}: expected {want}, got {type(value).__name__}")


@dataclass(frozen=True)
class Any_(Spec):
    """Any value the wire allows."""

    def valid(self, value: Any) -> bool:
        return True

    def check(self, value: Any, path: str) -> None:
        return None


@dataclass(frozen=True)
class Null(Spec):
    def valid(self, value: Any) -> bool:
        return value is None

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            raise _fail(path, "nil", value)


@dataclass(frozen=True)
class Bool(Spec):
    def valid(self, value: Any) -> bool:
        return isinstance(value, bool)

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise _fail(path, "bool", value)


@dataclass(frozen=True)
class Int(Spec):
    lo: int | None = None
    hi: int | None = None

    def valid(self, value: Any) -> bool:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(path, "int", value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ContractViolation(f"{path}: {value} is outside [{self.lo}, {self.hi}]")

    def describe(self) -> str:
        return f"int[{self.lo}..{self.hi}]"


@dataclass(frozen=True)
class Float(Spec):
    def valid(self, value: Any) -> bool:
        return isinstance(value, float | int) and not isinstance(value, bool)

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise _fail(path, "float", value)


@dataclass(frozen=True)
class Str(Spec):
    max_len: int = 256
    choices: frozenset[str] | None = None

    def valid(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.max_len and (
            self.choices is None or value in self.choices)

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise _fail(path, "str", value)
        if len(value) > self.max_len:
            raise ContractViolation(f"{path}: string longer than {self.max_len}")
        if self.choices is not None and value not in self.choices:
            raise ContractViolation(f"{path}: {value!r} is not one of {sorted(self.choices)}")


@dataclass(frozen=True)
class Bytes(Spec):
    min_len: int = 0
    max_len: int = 1 << 20

    def valid(self, value: Any) -> bool:
        return isinstance(value, bytes) and self.min_len <= len(value) <= self.max_len

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes):
            raise _fail(path, "bytes", value)
        if not self.min_len <= len(value) <= self.max_len:
            raise ContractViolation(
                f"{path}: {len(value)} bytes, expected {self.min_len}..{self.max_len}"
            )


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max_len: int = 1024
    min_len: int = 0

    def valid(self, value: Any) -> bool:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            return False
        spec = self.item
        if type(spec) is Int:  # big lists of handles: no call per item
            lo, hi = spec.lo, spec.hi
            for item in value:
                if (type(item) is not int or (lo is not None and item < lo)
                        or (hi is not None and item > hi)) and not spec.valid(item):
                    return False  # (an int subclass in range is an int, as check says)
            return True
        if type(spec) is Bytes:  # lists of pages and blocks: no call per item either
            shortest, longest = spec.min_len, spec.max_len
            for item in value:
                if (type(item) is not bytes or not shortest <= len(item) <= longest) \
                        and not spec.valid(item):  # e.g. a bytes subclass: the general test
                    return False
            return True
        return all(map(spec.valid, value))

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _fail(path, "list", value)
        if not self.min_len <= len(value) <= self.max_len:
            raise ContractViolation(
                f"{path}: {len(value)} items, expected {self.min_len}..{self.max_len}"
            )
        spec = self.item
        if type(spec) is Int:  # big lists of handles: no path string per item
            lo, hi = spec.lo, spec.hi
            for i, item in enumerate(value):
                if type(item) is not int or (lo is not None and item < lo) \
                        or (hi is not None and item > hi):
                    spec.check(item, f"{path}[{i}]")  # raises with the precise message
            return
        for i, item in enumerate(value):
            spec.check(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Tuple(Spec):
    """A fixed-length array with one spec per position."""

    items: tuple[Spec, ...]

    def valid(self, value: Any) -> bool:
        items = self.items
        if not isinstance(value, list) or len(value) != len(items):
            return False
        for spec, item in zip(items, value, strict=True):  # noqa: SIM110 (no generator frame)
            if not spec.valid(item):
                return False
        return True

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise _fail(path, f"array of {len(self.items)}", value)
        for i, (spec, item) in enumerate(zip(self.items, value, strict=True)):
            spec.check(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Opt(Spec):
    inner: Spec

    def valid(self, value: Any) -> bool:
        return value is None or self.inner.valid(value)

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)


@dataclass(frozen=True)
class Struct(Spec):
    """A map with exactly these keys (those in ``optional`` may be absent)."""

    fields: Mapping[str, Spec]
    optional: frozenset[str] = frozenset()

    @functools.cached_property
    def _required(self) -> frozenset[str]:
        return frozenset(self.fields) - self.optional

    def valid(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        fields = self.fields
        for key, item in value.items():
            spec = fields.get(key)  # an int key finds none
            if spec is None or not spec.valid(item):
                return False
        return len(value) == len(fields) or self._required.issubset(value)

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(path, "map", value)
        for key in value:
            if key not in self.fields:
                raise ContractViolation(f"{path}: unexpected key {key!r}")
        for key, spec in self.fields.items():
            if key in value:
                spec.check(value[key], f"{path}.{key}")
            elif key not in self.optional:
                raise ContractViolation(f"{path}: missing key {key!r}")


def _faulty(where: str, exc: Exception) -> ContractViolation:
    """The typed error for a schema whose own code (a program's ``Spec`` node, or the
    test compiled from it) raised instead of answering: the message is refused."""
    return ContractViolation(f"{where}: the contract's schema failed ({type(exc).__name__})")


ERROR_BODY = Struct({"reason": Str(64), "detail": Str(1024)})


@dataclass(frozen=True)
class Op:
    """One operation of a contract: request schema, reply schema, error reasons, and how
    many capabilities its ``ok`` reply may carry (``reply_caps``; 0: none -- a caller,
    the kernel included, never has capabilities pushed on it that it did not ask for)."""

    request: Spec
    reply: Spec = field(default_factory=Null)
    errors: frozenset[str] = frozenset()
    oneway: bool = False
    reply_caps: int = 0

    @functools.cached_property
    def request_valid(self) -> Callable[[Any], bool]:
        """``request.valid``, compiled (:mod:`capkern._contract_compile`)."""
        from ._contract_compile import compile_valid

        return compile_valid(self.request, _KINDS)

    @functools.cached_property
    def request_closed(self) -> bool:
        """Whether ``request`` is made only of the built-in nodes, none of them ``Any_``:
        a body that passes it is plain wire data within the limits (see :func:`closed`)."""
        return closed(self.request)

    @functools.cached_property
    def reply_closed(self) -> bool:
        """``reply``, likewise."""
        return closed(self.reply)

    @functools.cached_property
    def request_builtin(self) -> bool:
        """Whether ``request`` is made only of the built-in nodes (``Any_`` included): no
        program's code sees the value it tests (see :func:`builtin`)."""
        return builtin(self.request)

    @functools.cached_property
    def reply_builtin(self) -> bool:
        """``reply``, likewise."""
        return builtin(self.reply)

    @functools.cached_property
    def request_depth(self) -> int:
        """How deep a body ``request`` accepts may nest (see :func:`container_depth`)."""
        return container_depth(self.request)

    @functools.cached_property
    def reply_depth(self) -> int:
        """``reply``, likewise."""
        return container_depth(self.reply)

    @functools.cached_property
    def reply_valid(self) -> Callable[[Any], bool]:
        """``reply.valid``, compiled."""
        from ._contract_compile import compile_valid

        return compile_valid(self.reply, _KINDS)


@dataclass(frozen=True)
class Contract:
    """A server interface: a name and its operations by label."""

    name: str
    ops: Mapping[str, Op]

    def check_request(self, label: str, body: Any) -> Op:
        op = self.ops.get(label)
        if op is None:
            raise ContractViolation(f"{self.name}: unknown label {label!r}")
        try:
            if not op.request_valid(body):
                op.request.enforce(body, f"{self.name}.{label}")
        except ContractViolation:
            raise
        except Exception as exc:  # a program's own schema node failed: its fault, typed
            raise _faulty(f"{self.name}.{label}", exc) from None
        return op

    def closed_request(self, label: str, max_depth: int = MAX_SCHEMA_DEPTH) -> bool:
        """Whether a request ``label`` is tested by a closed schema (see :func:`closed`)
        no deeper than ``max_depth`` (the kernel's ``Limits.max_depth``: a program's
        contract may be deeper than a kernel booted with a smaller limit allows, and then
        only the walk enforces that limit)."""
        op = self.ops.get(label)
        return op is not None and op.request_closed and op.request_depth <= max_depth

    def closed_reply(self, request_label: str, label: str,
                     max_depth: int = MAX_SCHEMA_DEPTH) -> bool:
        """Whether a reply ``label`` to ``request_label`` is tested by a closed schema no
        deeper than ``max_depth``."""
        if label == "error":
            return max_depth >= _ERROR_DEPTH  # ERROR_BODY
        op = self.ops.get(request_label)
        return (label == "ok" and op is not None and op.reply_closed
                and op.reply_depth <= max_depth)

    def builtin_request(self, label: str) -> bool:
        """Whether the value tested for a request ``label`` may be delivered as the
        receiver's body: only built-in nodes saw it (see :func:`builtin`)."""
        op = self.ops.get(label)
        return op is not None and op.request_builtin

    def builtin_reply(self, request_label: str, label: str) -> bool:
        """Whether the value tested for a reply may be delivered as the caller's body."""
        if label == "error":
            return True  # ERROR_BODY
        op = self.ops.get(request_label)
        return op is not None and (label != "ok" or op.reply_builtin)

    def check_reply(self, request_label: str, label: str, body: Any) -> None:
        try:
            self._check_reply(request_label, label, body)
        except ContractViolation:
            raise
        except Exception as exc:  # a program's own schema node failed: its fault, typed
            raise _faulty(f"{self.name}.{request_label} reply", exc) from None

    def _check_reply(self, request_label: str, label: str, body: Any) -> None:
        op = self.ops[request_label]
        if label == "ok" and op.reply_valid(body):
            return
        where = f"{self.name}.{request_label} reply"
        if label == "ok":
            op.reply.enforce(body, where)
        elif label == "error":
            ERROR_BODY.check(body, where)
            if body["reason"] not in op.errors:
                raise ContractViolation(f"{where}: undeclared error reason {body['reason']!r}")
        else:
            raise ContractViolation(f"{where}: label must be 'ok' or 'error', not {label!r}")


#: the schema classes :mod:`capkern._contract_compile` compiles (exact types; a subclass
#: keeps its own ``valid``)
_KINDS: dict[type, str] = {kind: kind.__name__ for kind in (
    Any_, Null, Bool, Int, Float, Str, Bytes, ListOf, Tuple, Opt, Struct)}


def _children(spec: Spec) -> tuple[Any, ...]:
    if isinstance(spec, ListOf):
        return (spec.item,)
    if isinstance(spec, Tuple):
        return tuple(spec.items)
    if isinstance(spec, Opt):
        return (spec.inner,)
    if isinstance(spec, Struct):
        return tuple(spec.fields.values())
    return ()


def check_schema(contract: Any) -> None:
    """Refuse, with :class:`ConfigError`, a contract a domain could not use safely: not
    a :class:`Contract` of operations (:class:`Op`) of :class:`Spec` nodes, deeper than any
    message may be (:data:`MAX_SCHEMA_DEPTH`; a cycle counts as too deep), or bigger than
    :data:`MAX_SCHEMA_NODES`.  A contract is a program's input when it creates an
    endpoint: checked there, before any message is tested against it."""
    if not isinstance(contract, Contract) or not isinstance(contract.ops, Mapping):
        raise ConfigError(f"contract must be a capkern Contract, not {type(contract).__name__}")
    nodes = 0
    for label, op in contract.ops.items():
        if not isinstance(label, str) or not isinstance(op, Op):
            raise ConfigError(f"contract {contract.name!r}: operations are str -> Op")
        stack: list[tuple[Any, int]] = [(op.request, 1), (op.reply, 1)]
        while stack:
            spec, depth = stack.pop()
            nodes += 1
            if not isinstance(spec, Spec):
                raise ConfigError(f"contract {contract.name!r}.{label}: a schema node must be "
                                  f"a Spec, not {type(spec).__name__}")
            if depth > MAX_SCHEMA_DEPTH or nodes > MAX_SCHEMA_NODES:
                raise ConfigError(
                    f"contract {contract.name!r}.{label}: schema deeper than "
                    f"{MAX_SCHEMA_DEPTH} levels or over {MAX_SCHEMA_NODES} nodes")
            stack.extend((child, depth + 1) for child in _children(spec))


def container_depth(spec: Spec) -> int:
    """How many containers a value ``spec`` accepts may nest, counted as the wire's
    shape walk counts them (a map, list or array is a level; ``Opt`` and scalars are not).
    For the built-in nodes of a checked schema (bounded, acyclic); a foreign node counts
    as :data:`MAX_SCHEMA_DEPTH` deep, since its ``valid`` may accept anything."""
    if type(spec) not in _KINDS or type(spec) is Any_:
        return MAX_SCHEMA_DEPTH
    below = max((container_depth(child) for child in _children(spec)), default=0)
    return below + (1 if isinstance(spec, ListOf | Tuple | Struct) else 0)


_ERROR_DEPTH = container_depth(ERROR_BODY)  # one map of strings: 1


def builtin(spec: Spec) -> bool:
    """Whether a schema is made only of the built-in nodes of this module (exact types).
    A program's own node runs its code on the value the kernel decoded to test a
    message, and may keep it: that value must not then become the receiver's body (two
    domains would share one object), so the receiver decodes its own."""
    stack: list[Any] = [spec]
    while stack:
        node = stack.pop()
        if type(node) not in _KINDS:
            return False
        stack.extend(_children(node))
    return True


def closed(spec: Spec) -> bool:
    """Whether a schema is made only of the built-in nodes of this module, none of them
    ``Any_``, its ``Struct`` fields named by ``str`` only (a map key of another type
    could be one the walk refuses: bytes, None, a float, or a bool equal to an int
    field's name).  A decoded value that passes such a schema is plain wire data: str keys,
    the allowed scalar types, and no deeper than the schema (at most
    :data:`MAX_SCHEMA_DEPTH`); its bounds and choices are plain values, so its test runs
    no program's code and cannot raise.  So a message tested by one need not have its shape walked
    before it is encoded (:func:`capkern._wire.encode_unwalked`)."""
    stack: list[Any] = [spec]
    while stack:
        node = stack.pop()
        if type(node) not in _KINDS or type(node) is Any_:
            return False
        if type(node) is Struct and any(type(name) is not str for name in node.fields):
            return False  # a bytes, None, float or bool key (or a bool sent for an int)
        if not _plain_parameters(node):
            return False
        stack.extend(_children(node))
    return True


def _plain_parameters(node: Spec) -> bool:
    """Whether a built-in node's bounds and choices are plain values: exact ``int``
    bounds, a ``frozenset`` of exact ``str`` choices.  Any other object there (an int
    subclass, a set with its own ``__contains__``) is its creator's code, run by the
    test at the trap of whoever sends or replies: such a schema is tested like a
    program's own node, its failures typed (:func:`_faulty`), never on a fast path."""
    if type(node) is Int:
        return (node.lo is None or type(node.lo) is int) and \
            (node.hi is None or type(node.hi) is int)
    if type(node) is Str:
        choices = node.choices
        return type(node.max_len) is int and (choices is None or (
            type(choices) is frozenset and all(type(c) is str for c in choices)))
    if type(node) is Bytes or type(node) is ListOf:
        return type(node.min_len) is int and type(node.max_len) is int
    return True
