"""Capability operations as a hypothesis state machine: after any sequence of
copy/mint/move/delete/revoke/transfer, nothing derived from a revoked capability
survives, and rights never grow along the derivation tree."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from capkern._cspace import Cap, CSpace, KObject, Rights
from capkern.errors import CapabilityError

RIGHTS = st.sampled_from([Rights(r) for r in range(8)])


class CapMachine(RuleBasedStateMachine):
    @initialize()
    def boot(self) -> None:
        self.spaces = [CSpace(f"d{i}", i, size=64) for i in range(3)]
        self.doomed: list[Cap] = []  # caps that a revoke removed: must never reappear
        for i, name in enumerate(("ep", "ntfn")):
            self.spaces[i].insert_original(KObject(name), Rights.ALL)

    def _live(self) -> list[Cap]:
        return [c for s in self.spaces for c in s.caps()]

    def _pick(self, data: st.DataObject) -> Cap | None:
        live = self._live()
        return data.draw(st.sampled_from(live)) if live else None

    @rule(data=st.data(), rights=RIGHTS, to=st.integers(0, 2))
    def copy_or_transfer(self, data: st.DataObject, rights: Rights, to: int) -> None:
        src = self._pick(data)
        if src is None:
            return
        try:
            self.spaces[to].insert_derived(src, rights, None)
        except CapabilityError:
            pass

    @rule(data=st.data(), rights=RIGHTS, badge=st.integers(0, 5))
    def mint(self, data: st.DataObject, rights: Rights, badge: int) -> None:
        src = self._pick(data)
        if src is None or src.cspace is None:
            return
        space = src.cspace
        before = len(space)
        try:
            space.mint(src.slot, rights, badge)
        except CapabilityError:
            assert len(space) == before  # decode failed: nothing changed

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        src = self._pick(data)
        if src is not None and src.cspace is not None:
            parent = src.parent
            src.cspace.move(src.slot)
            assert src.parent is parent

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        src = self._pick(data)
        if src is not None and src.cspace is not None:
            src.cspace.delete(src.slot)

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        src = self._pick(data)
        if src is None or src.cspace is None:
            return
        below = list(src.descendants())
        removed = src.cspace.revoke(src.slot)
        assert removed == len(below)
        assert src.cspace is not None  # the revoked cap itself stays
        self.doomed.extend(below)

    @invariant()
    def nothing_revoked_survives(self) -> None:
        live = {id(c) for c in self._live()}
        assert not any(id(c) in live for c in self.doomed)
        assert all(c.cspace is None for c in self.doomed)

    @invariant()
    def rights_never_grow_and_badges_stick(self) -> None:
        for cap in self._live():
            p = cap.parent
            if p is not None:
                assert cap.rights & ~p.rights == 0
                assert p.badge == 0 or cap.badge == p.badge
                assert cap.obj is p.obj

    @invariant()
    def tree_links_and_slots_consistent(self) -> None:
        for space in self.spaces:
            for cap in space.caps():
                assert cap.cspace is space
                assert space.lookup(cap.slot) is cap
                if cap.parent is not None:
                    assert cap in cap.parent.children
                for child in cap.children:
                    assert child.parent is cap


CapMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                        derandomize=True, deadline=None)
TestCapabilities = CapMachine.TestCase


def test_error_messages_name_domain_slot_and_kind() -> None:
    space = CSpace("client", 7)
    slot = space.insert_original(KObject("echo"), Rights.READ, name="server")
    try:
        space.lookup(slot, Rights.WRITE)
    except CapabilityError as exc:
        text = str(exc)
        assert "'client'" in text and "'server'" in text and "Object#" in text and "w" in text
    child = space.copy(slot)
    space.revoke(slot)
    try:
        space.lookup(child)
    except CapabilityError as exc:
        assert "revoked" in str(exc)
