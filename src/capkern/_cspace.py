"""Capabilities and capability spaces (the seL4 model, sans-IO).

A capability is ``(object, rights, badge)``.  Each protection domain has one
:class:`CSpace`: a fixed-size array of slots; a domain names a kernel object only by
slot index in its own CSpace.  Every capability made from another (copy, mint, IPC
transfer) becomes its child in the *derivation tree*; :meth:`CSpace.revoke` removes every
descendant, transitively, in whatever CSpace it lives.  Deleting a capability splices its
children onto its parent, so a later revoke higher up still reaches them.

Removing a capability (delete, revoke, teardown) also cancels whatever was blocked on
it: an IPC operation waiting through a capability registers a :class:`Blocker` on it,
and the removal calls the blocker's ``cancel`` (seL4: deleting a capability aborts the
IPC it was used for).  Accounting is done here too: every filled slot is charged to the
CSpace owner's :class:`~capkern._quota.Usage` (``slots``), every object created through
:meth:`CSpace.insert_original` with an owner to that owner (``objects``), released when
the slot empties or the object's last capability goes.  All operations are linear in
what they touch (revoke of ``n`` descendants is O(n), never O(n^2)).

Every operation is *decode* then *invoke* (seL4's split): all checks run first and raise
typed errors; the mutation that follows cannot fail half-way.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ._quota import Usage
from .errors import (
    BadgeError,
    ConfigError,
    CSpaceFull,
    EmptySlot,
    InsufficientRights,
    InvalidSlot,
    SlotOccupied,
    WrongObjectType,
)

__all__ = ["Blocker", "Cap", "CapInfo", "CSpace", "KObject", "Rights"]

MAX_BADGE = (1 << 62) - 1


class Rights(enum.IntFlag):
    """Capability rights.  READ: receive/wait.  WRITE: send/signal/call.  GRANT: transfer
    capabilities in a message."""

    NONE = 0
    READ = 1
    WRITE = 2
    GRANT = 4
    ALL = READ | WRITE | GRANT

    @classmethod
    def parse(cls, text: str | int | Rights) -> Rights:
        """``"rwg"``-style strings, ints or Rights -> Rights (else :class:`ConfigError`)."""
        if isinstance(text, Rights):
            return text
        if type(text) is int:
            if not 0 <= text <= cls.ALL:
                raise ConfigError(f"rights {text} out of range 0..{int(cls.ALL)}")
            return cls(text)
        if not isinstance(text, str):
            raise ConfigError(f"rights must be a str like 'rwg', not {text!r}")
        letters = {"r": cls.READ, "w": cls.WRITE, "g": cls.GRANT, "-": cls.NONE}
        out = cls.NONE
        for ch in text.lower():
            if ch not in letters:
                raise ConfigError(f"unknown right {ch!r} in {text!r}")
            out |= letters[ch]
        return out

    def short(self) -> str:
        return "".join(
            ch if self & r else "-"
            for ch, r in (("r", Rights.READ), ("w", Rights.WRITE), ("g", Rights.GRANT))
        )


_oids = itertools.count(1)


class KObject:
    """A kernel object: endpoint, notification, reply.  Lives in kernel memory only."""

    kind = "Object"

    # slots for a subclass that declares its own (a reply object, made at every call);
    # one that does not (an endpoint) still gets a __dict__ of its own
    __slots__ = ("name", "oid", "owner", "refs")

    def __init__(self, name: str = "") -> None:
        self.oid = next(_oids)
        self.name = name
        self.refs = 0  # capabilities naming this object, in any CSpace
        self.owner: Usage | None = None  # charged one "objects" while any capability lives

    def label(self) -> str:
        return f"{self.kind}#{self.oid}" + (f" {self.name!r}" if self.name else "")


class Blocker(Protocol):
    """Something blocked through a capability (an IPC wait); cancelled if it goes."""

    def cancel(self, why: str) -> None: ...


class Cap:
    """One capability in one slot of one CSpace, a node of the derivation tree."""

    __slots__ = ("_kids", "badge", "blocked", "cspace", "obj", "parent", "rights", "slot")

    def __init__(self, obj: KObject, rights: Rights, badge: int = 0) -> None:
        self.obj = obj
        self.rights = rights
        self.badge = badge
        self.parent: Cap | None = None
        self._kids: dict[Cap, None] = {}  # children, insertion-ordered; O(1) removal
        self.cspace: CSpace | None = None
        self.slot = -1
        self.blocked: dict[Blocker, None] | None = None  # operations waiting through it

    def block(self, waiter: Blocker) -> None:
        """Register an operation blocked through this capability."""
        if self.blocked is None:
            self.blocked = {waiter: None}
        else:
            self.blocked[waiter] = None

    def unblock(self, waiter: Blocker) -> None:
        if self.blocked is not None:
            self.blocked.pop(waiter, None)

    @property
    def children(self) -> list[Cap]:
        """The capabilities derived directly from this one."""
        return list(self._kids)

    def descendants(self) -> Iterator[Cap]:
        stack = list(self._kids)
        while stack:
            cap = stack.pop()
            yield cap
            stack.extend(cap._kids)

    def derive(self, rights: Rights, badge: int) -> Cap:
        """A new child capability (not yet placed in a slot)."""
        child = Cap(self.obj, rights, badge)
        child.parent = self
        self._kids[child] = None
        return child


@dataclass(frozen=True, slots=True)
class CapInfo:
    """What introspection shows about one slot."""

    slot: int
    name: str
    kind: str
    oid: int
    object_name: str
    rights: str
    badge: int
    parent: tuple[int, int] | None  # (pid, slot) of the capability it derives from


class CSpace:
    """The capability space of one protection domain."""

    def __init__(self, owner: str, pid: int, size: int = 4096, usage: Usage | None = None) -> None:
        self.owner = owner
        self.pid = pid
        self.size = size
        self.usage = usage  # charged one "slots" per filled slot
        self._slots: list[Cap | None] = [None]  # slot 0 is the null slot, never filled
        self._free: list[int] = []
        self._count = 0
        self.names: dict[str, int] = {}
        self._names_of: dict[int, list[str]] = {}  # slot -> names (reverse of ``names``)
        self._gone: dict[int, str] = {}
        self._gone_names: dict[str, int] = {}  # names of emptied slots, for error messages
        self._gone_of: dict[int, list[str]] = {}  # slot -> names it had when emptied

    # -- describing ---------------------------------------------------------------------

    def _where(self, slot: int) -> str:
        name = next((n for n, s in self.names.items() if s == slot), "")
        if not name and 0 < slot < len(self._slots) and self._slots[slot] is None:
            # an emptied slot: name it by the name it had, so a stale use is recognisable
            name = next((n for n, s in self._gone_names.items() if s == slot), "")
        return f"domain {self.owner!r} (pid {self.pid}) slot {slot}" + (
            f" {name!r}" if name else ""
        )

    def describe(self, cap: Cap) -> str:
        return f"{self._where(cap.slot)} -> {cap.obj.label()} [{cap.rights.short()}]"

    # -- decode -------------------------------------------------------------------------

    def lookup(
        self, slot: int, need: Rights = Rights.NONE, kind: type[KObject] | None = None
    ) -> Cap:
        """Resolve ``slot`` to a capability with at least ``need`` rights."""
        if type(slot) is not int or slot <= 0:
            raise InvalidSlot(f"{slot!r} is not a slot index in domain {self.owner!r}")
        if slot >= len(self._slots):
            raise InvalidSlot(
                f"{self._where(slot)} does not exist (CSpace has {len(self._slots) - 1} slots)"
            )
        cap = self._slots[slot]
        if cap is None:
            why = self._gone.get(slot, "never filled")
            raise EmptySlot(f"{self._where(slot)} is empty ({why})")
        if kind is not None and type(cap.obj) is not kind and not isinstance(cap.obj, kind):
            raise WrongObjectType(f"{self.describe(cap)} is not a {kind.kind}")
        # plain-int arithmetic: IntFlag operators are slow on this hot path
        if need._value_ & ~cap.rights._value_:
            missing = Rights(need._value_ & ~cap.rights._value_).short()
            raise InsufficientRights(f"{self.describe(cap)} lacks right(s) {missing}")
        return cap

    def resolve_name(self, name: str) -> int:
        slot = self.names.get(name)
        if slot is not None:
            return slot
        old = self._gone_names.get(name)
        if old is not None:
            why = self._gone.get(old, "emptied")
            raise EmptySlot(f"domain {self.owner!r} (pid {self.pid}) slot {old} {name!r} "
                            f"is empty ({why})")
        raise InvalidSlot(f"domain {self.owner!r} has no slot named {name!r}")

    def _check_room(self, count: int = 1) -> None:
        if len(self._free) + (self.size - len(self._slots)) < count:
            raise CSpaceFull(f"CSpace of domain {self.owner!r} is full ({self.size} slots)")
        if self.usage is not None:
            self.usage.check("slots", count)

    @staticmethod
    def check_derivation(src: Cap, rights: Rights, badge: int | None) -> tuple[Rights, int]:
        """Rights only shrink; a badge can be set once, on an unbadged capability;
        nothing derives from a capability a revoke in progress is removing."""
        if _revoking:
            _check_not_doomed(src)
        new_rights = Rights(rights & src.rights)
        if badge is None or badge == src.badge:
            return new_rights, src.badge
        if type(badge) is not int:
            raise BadgeError(f"a badge is an int, not {type(badge).__name__} {badge!r}")
        if not 0 < badge <= MAX_BADGE:
            raise BadgeError(f"badge {badge!r} out of range 1..{MAX_BADGE}")
        if src.badge:
            raise BadgeError(f"cannot re-badge badged capability (badge {src.badge})")
        return new_rights, badge

    # -- invoke (cannot fail once decode passed) -----------------------------------------

    def _forget_gone(self, slot: int) -> None:
        """A slot is filled again: its old emptiness reason and names no longer apply."""
        self._gone.pop(slot, None)
        for name in self._gone_of.pop(slot, ()):
            if self._gone_names.get(name) == slot:
                del self._gone_names[name]

    def _add_name(self, slot: int, name: str) -> None:
        old = self.names.get(name)
        if old is not None and old != slot:
            self._names_of[old].remove(name)
        if old != slot:
            self.names[name] = slot
            self._names_of.setdefault(slot, []).append(name)
        self._gone_names.pop(name, None)

    def _place(self, cap: Cap, name: str = "") -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._slots)
            self._slots.append(None)
        self._slots[slot] = cap
        self._forget_gone(slot)
        cap.cspace = self
        cap.slot = slot
        cap.obj.refs += 1
        self._count += 1
        if self.usage is not None:
            self.usage.slots += 1  # checked in the decode phase (_check_room)
        if name:
            self._add_name(slot, name)
        return slot

    def _clear(self, cap: Cap, why: str, splice: bool = True) -> None:
        """Empty the slot of ``cap``, splice it out of the derivation tree (unless the
        caller already detached it), release its charges and cancel what waited on it."""
        slot = cap.slot
        self._slots[slot] = None
        self._free.append(slot)
        self._count -= 1
        self._gone[slot] = why
        names = self._names_of.pop(slot, None)
        if names:
            for name in names:
                del self.names[name]
                self._gone_names[name] = slot
            self._gone_of.setdefault(slot, []).extend(names)
        if splice:
            parent = cap.parent
            if parent is not None:
                del parent._kids[cap]
            for child in cap._kids:
                child.parent = parent
            if parent is not None:
                parent._kids.update(cap._kids)
            cap._kids = {}
            cap.parent = None
        cap.cspace = None
        cap.slot = -1
        if self.usage is not None:
            self.usage.release("slots")
        obj = cap.obj
        obj.refs -= 1
        if obj.refs == 0 and obj.owner is not None:
            obj.owner.release("objects")
            obj.owner = None
        waiting = cap.blocked
        if waiting:
            cap.blocked = None
            for waiter in list(waiting):
                waiter.cancel(f"{why}: {obj.label()} [{cap.rights.short()}]")

    # -- public operations ----------------------------------------------------------------

    def insert_original(self, obj: KObject, rights: Rights = Rights.ALL, name: str = "",
                        owner: Usage | None = None) -> int:
        """Place a root capability to a fresh object (what creating an object yields).
        ``owner`` (if given) is charged one ``objects`` until the object's last
        capability goes; nothing changes if either charge would pass a quota."""
        self._check_room()
        if owner is not None:
            owner.charge("objects")
            obj.owner = owner
        return self._place(Cap(obj, rights), name)

    def insert_derived(self, src: Cap, rights: Rights, badge: int | None, name: str = "") -> int:
        """Place a child of ``src`` (any CSpace) here: copy, mint and IPC transfer."""
        new_rights, new_badge = self.check_derivation(src, rights, badge)
        self._check_room()
        return self._place(src.derive(new_rights, new_badge), name)

    def copy(self, slot: int, rights: Rights = Rights.ALL, name: str = "") -> int:
        return self.insert_derived(self.lookup(slot), rights, None, name)

    def mint(self, slot: int, rights: Rights, badge: int, name: str = "") -> int:
        return self.insert_derived(self.lookup(slot), rights, badge, name)

    def move(self, slot: int, dest: int | None = None) -> int:
        """Move a capability to another slot of this CSpace, keeping its tree position."""
        cap = self.lookup(slot)
        if dest is None:
            # pick the destination before freeing ``slot``: otherwise the free list hands
            # the same slot straight back and the capability never moves
            self._check_room()
            dest = self._free[-1] if self._free else len(self._slots)
        else:
            if type(dest) is not int or dest <= 0 or dest >= self.size:
                raise InvalidSlot(f"{dest!r} is not a slot index in domain {self.owner!r}")
            if dest < len(self._slots) and self._slots[dest] is not None:
                raise SlotOccupied(f"{self.describe(self._slots[dest])} is occupied")  # type: ignore[arg-type]
        names = self._names_of.pop(slot, [])
        self._slots[slot] = None
        self._free.append(slot)
        self._gone[slot] = "moved"
        while len(self._slots) <= dest:
            self._free.append(len(self._slots))
            self._slots.append(None)
        self._free.remove(dest)
        self._slots[dest] = cap
        self._forget_gone(dest)
        cap.slot = new = dest
        for n in names:
            self.names[n] = new
        if names:
            self._names_of[new] = names
        return new

    def delete(self, slot: int) -> None:
        self._clear(self.lookup(slot), "deleted")

    def revoke(self, slot: int) -> int:
        """Delete every capability derived from the one in ``slot``; returns how many."""
        return revoke_cap(self.lookup(slot))

    def name_slot(self, slot: int, name: str) -> None:
        self.lookup(slot)
        self._add_name(slot, name)

    def clear_all(self, why: str) -> list[Cap]:
        """Empty every slot (domain teardown); returns the capabilities removed."""
        removed = [c for c in self._slots if c is not None]
        for cap in removed:
            self._clear(cap, why)
        return removed

    # -- introspection ------------------------------------------------------------------

    def caps(self) -> Iterator[Cap]:
        return (c for c in self._slots if c is not None)

    def info(self) -> list[CapInfo]:
        names = {s: n for n, s in self.names.items()}
        out = []
        for cap in self.caps():
            parent = cap.parent
            where = (
                (parent.cspace.pid, parent.slot)
                if parent is not None and parent.cspace is not None
                else None
            )
            out.append(
                CapInfo(
                    slot=cap.slot,
                    name=names.get(cap.slot, ""),
                    kind=cap.obj.kind,
                    oid=cap.obj.oid,
                    object_name=cap.obj.name,
                    rights=cap.rights.short(),
                    badge=cap.badge,
                    parent=where,
                )
            )
        return out

    def __len__(self) -> int:
        return self._count


_revoking: dict[Cap, int] = {}  # capabilities whose preemptible revoke is under way


def begin_revoke(cap: Cap) -> None:
    """A preemptible revoke of ``cap`` starts: until :func:`end_revoke`, nothing can be
    derived from its descendants (else a domain could grow the tree as fast as the
    revoke removes it)."""
    _revoking[cap] = _revoking.get(cap, 0) + 1


def end_revoke(cap: Cap) -> None:
    left = _revoking.pop(cap) - 1
    if left:
        _revoking[cap] = left


def _check_not_doomed(src: Cap) -> None:
    node = src.parent
    while node is not None:
        if node in _revoking:
            raise EmptySlot(f"{src.cspace.describe(src) if src.cspace else 'capability'} "
                            f"is being revoked")
        node = node.parent


def revoke_cap(cap: Cap) -> int:
    """Remove every descendant of ``cap`` from its CSpace; O(number removed)."""
    removed = 0
    while cap._kids:
        removed += revoke_some(cap, 1 << 62)
    return removed


def revoke_some(cap: Cap, budget: int) -> int:
    """Remove up to ``budget`` descendants of ``cap`` (the preemptible step of a revoke:
    call again while ``cap.children`` is non-empty).  Each removed capability's children
    are lifted onto ``cap`` first, so capabilities derived between two steps from one
    not yet removed are still reached; every capability is lifted at most once."""
    why = f"revoked via {cap.obj.label()}"
    removed = 0
    kids = cap._kids
    while kids and removed < budget:
        victim, _ = kids.popitem()
        for child in victim._kids:
            child.parent = cap
        kids.update(victim._kids)
        victim._kids = {}
        victim.parent = None
        if victim.cspace is not None:
            victim.cspace._clear(victim, why, splice=False)
        removed += 1
    return removed
