"""A contract's fast test compiled to one Python function per schema (sans-IO).

Every message on a contracted endpoint is tested with ``Spec.valid``: a tree of method
calls, one per schema node and list item, each looking up its own bounds.  The fault path
tests about four messages per fault that way, so the tree walk is a visible share of a
fault.  :func:`compile_valid` turns a schema into straight-line code instead -- nested
``if``s and ``for`` loops with the bounds as constants -- that answers exactly as
``valid`` does (the contract tests check the two agree on every system contract, for
bodies that fit, broken ones and arbitrary wire values).

Only the schema classes of :mod:`capkern._contract` themselves are compiled; a subclass
or a user's own ``Spec`` is called through its own ``valid``, so it keeps its meaning.
The generated source is built from the schema's numbers and ``repr``-ed field names
only; every other value (choice sets, foreign specs) is passed in as a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_valid"]

#: schema levels written out inline; below them a node is called through its own
#: ``valid`` (Python refuses code with more than 20 nested loops or 100 indents)
MAX_INLINE = 12


class _Gen:
    """Source lines of one validator, and the constants it refers to."""

    def __init__(self, kinds: Mapping[type, str]) -> None:
        self.kinds = kinds  # the schema classes compiled, by name (exact types only)
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"_isinstance": isinstance, "_len": len, "_int": int,
                                    "_bool": bool, "_bytes": bytes, "_str": str,
                                    "_list": list, "_dict": dict, "_float": float,
                                    "_type": type}
        self.names = 0

    def name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def const(self, value: Any) -> str:
        key = self.name("_k")
        self.env[key] = value
        return key

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def num(self, value: Any) -> str:
        """An int as a literal; anything else (a float bound, a subclass) as a constant,
        so the generated test compares exactly what ``valid`` compares."""
        return repr(value) if type(value) is int else self.const(value)

    def key(self, name: Any) -> str:
        """A field name as a literal if it is a plain str, else as a constant."""
        return repr(name) if type(name) is str else self.const(name)

    def fail_if(self, indent: int, cond: str) -> None:
        self.emit(indent, f"if {cond}: return False")

    def spec(self, spec: Any, v: str, ind: int) -> None:
        """Statements that return False unless the value in variable ``v`` fits."""
        kind = self.kinds.get(type(spec), "")
        if ind > MAX_INLINE and kind not in ("", "Any_"):
            kind = ""  # deeper nodes test themselves: Python bounds nested blocks
        if kind == "Any_":
            return
        if kind == "Null":
            self.fail_if(ind, f"{v} is not None")
        elif kind == "Bool":
            self.fail_if(ind, f"not _isinstance({v}, _bool)")
        elif kind == "Int":
            self.fail_if(ind, f"_type({v}) is not _int and (not _isinstance({v}, _int) "
                              f"or _isinstance({v}, _bool))")
            if spec.lo is not None and spec.hi is not None:
                self.fail_if(ind, f"not {self.num(spec.lo)} <= {v} <= {self.num(spec.hi)}")
            elif spec.lo is not None:
                self.fail_if(ind, f"{v} < {self.num(spec.lo)}")
            elif spec.hi is not None:
                self.fail_if(ind, f"{v} > {self.num(spec.hi)}")
        elif kind == "Float":
            self.fail_if(ind, f"not _isinstance({v}, (_float, _int)) or _isinstance({v}, _bool)")
        elif kind == "Str":
            self.fail_if(ind, f"not _isinstance({v}, _str) or _len({v}) > {self.num(spec.max_len)}")
            if spec.choices is not None:
                self.fail_if(ind, f"{v} not in {self.const(spec.choices)}")
        elif kind == "Bytes":
            self.fail_if(ind, f"not _isinstance({v}, _bytes) or not "
                              f"{self.num(spec.min_len)} <= _len({v}) <= {self.num(spec.max_len)}")
        elif kind == "ListOf":
            self.fail_if(ind, f"not _isinstance({v}, _list) or not "
                              f"{self.num(spec.min_len)} <= _len({v}) <= {self.num(spec.max_len)}")
            item = self.name("_x")
            self.emit(ind, f"for {item} in {v}:")
            self.emit(ind + 1, "pass")
            self.spec(spec.item, item, ind + 1)
        elif kind == "Tuple":
            self.fail_if(ind, f"not _isinstance({v}, _list) or _len({v}) != {len(spec.items)!r}")
            for i, sub in enumerate(spec.items):
                item = self.name("_x")
                self.emit(ind, f"{item} = {v}[{i}]")
                self.spec(sub, item, ind)
        elif kind == "Opt":
            self.emit(ind, f"if {v} is not None:")
            self.emit(ind + 1, "pass")
            self.spec(spec.inner, v, ind + 1)
        elif kind == "Struct":
            self.struct(spec, v, ind)
        else:  # a subclass or a user's Spec: its own test
            self.fail_if(ind, f"not {self.const(spec)}.valid({v})")

    def struct(self, spec: Any, v: str, ind: int) -> None:
        self.fail_if(ind, f"not _isinstance({v}, _dict)")
        optional = [k for k in spec.fields if k in spec.optional]
        if optional:  # every key present must be a field
            key = self.name("_key")
            self.emit(ind, f"for {key} in {v}:")
            self.fail_if(ind + 1, f"{key} not in {self.const(frozenset(spec.fields))}")
        else:  # all fields present and no more keys: no other key can be there
            self.fail_if(ind, f"_len({v}) != {len(spec.fields)!r}")
        for name, sub in spec.fields.items():
            item, key = self.name("_x"), self.key(name)
            if name in spec.optional:
                self.emit(ind, f"if {key} in {v}:")
                self.emit(ind + 1, f"{item} = {v}[{key}]")
                self.spec(sub, item, ind + 1)
            else:
                self.fail_if(ind, f"{key} not in {v}")
                self.emit(ind, f"{item} = {v}[{key}]")
                self.spec(sub, item, ind)


def compile_valid(spec: Any, kinds: Mapping[type, str]) -> Callable[[Any], bool]:
    """A function answering as ``spec.valid`` does, compiled from the schema.  ``kinds``
    names _contract's schema classes (passed in: this module does not import that one,
    which imports it)."""
    gen = _Gen(kinds)
    gen.emit(0, "def valid(v):")
    gen.spec(spec, "v", 1)
    gen.emit(1, "return True")
    source = "\n".join(gen.lines)
    namespace: dict[str, Any] = dict(gen.env)
    exec(compile(source, f"<contract {spec.describe()}>", "exec"), namespace)
    valid: Callable[[Any], bool] = namespace["valid"]
    return valid
