"""Unit and state-machine tests of the sans-IO capability layer (capkern._cspace)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from capkern._cspace import MAX_BADGE, Cap, CSpace, KObject, Rights, revoke_cap
from capkern.errors import (
    BadgeError,
    ConfigError,
    CSpaceFull,
    EmptySlot,
    InsufficientRights,
    InvalidSlot,
    SlotOccupied,
    WrongObjectType,
)


class Ep(KObject):
    kind = "Endpoint"


class Ntfn(KObject):
    kind = "Notification"


R, W, G = Rights.READ, Rights.WRITE, Rights.GRANT


def cs(owner: str = "alice", pid: int = 1, size: int = 64) -> CSpace:
    return CSpace(owner, pid, size=size)


# -- insert, copy, mint -------------------------------------------------------------------


def test_insert_original_is_a_root_with_all_rights() -> None:
    c = cs()
    ep = Ep("svc")
    s = c.insert_original(ep, name="svc")
    assert s >= 1
    cap = c.lookup(s)
    assert cap.obj is ep and cap.rights == Rights.ALL and cap.badge == 0
    assert cap.parent is None and cap.children == []
    assert cap.cspace is c and cap.slot == s
    assert c.resolve_name("svc") == s
    assert len(c) == 1


def test_insert_original_with_fewer_rights() -> None:
    c = cs()
    s = c.insert_original(Ep(), R)
    assert c.lookup(s).rights == R


def test_copy_is_a_child_with_rights_intersected() -> None:
    c = cs()
    root = c.insert_original(Ep(), R | W)
    s = c.copy(root)  # default ALL -> capped at the source's rights
    cap = c.lookup(s)
    assert cap.rights == R | W
    assert cap.parent is c.lookup(root)
    assert cap in c.lookup(root).children
    s2 = c.copy(s, R | G, name="ro")
    assert c.lookup(s2).rights == R  # G never appears: rights only shrink
    assert c.resolve_name("ro") == s2


def test_copy_keeps_badge() -> None:
    c = cs()
    root = c.insert_original(Ep())
    m = c.mint(root, Rights.ALL, 7)
    cp = c.copy(m, W)
    assert c.lookup(cp).badge == 7
    assert c.lookup(cp).parent is c.lookup(m)


def test_mint_sets_badge_and_shrinks_rights() -> None:
    c = cs()
    root = c.insert_original(Ep(), R | W)
    m = c.mint(root, Rights.ALL, 42)
    cap = c.lookup(m)
    assert cap.badge == 42 and cap.rights == R | W
    m2 = c.mint(m, W, 42)  # same badge: allowed, no re-badge
    assert c.lookup(m2).badge == 42 and c.lookup(m2).rights == W
    m3 = c.mint(m, R, None)  # type: ignore[arg-type]
    assert c.lookup(m3).badge == 42


def test_mint_rwg_from_read_only_gives_read_only() -> None:
    c = cs()
    root = c.insert_original(Ep(), Rights.parse("r"))
    m = c.mint(root, Rights.parse("rwg"), 9)
    assert c.lookup(m).rights == Rights.parse("r") and c.lookup(m).rights.short() == "r--"
    assert c.lookup(m).badge == 9
    with pytest.raises(InsufficientRights, match="-w-"):
        c.lookup(m, W)


def test_mint_max_badge_ok() -> None:
    c = cs()
    root = c.insert_original(Ep())
    assert c.lookup(c.mint(root, R, MAX_BADGE)).badge == MAX_BADGE


def test_rebadging_a_badged_cap_raises() -> None:
    c = cs()
    root = c.insert_original(Ep())
    m = c.mint(root, Rights.ALL, 5)
    before = len(c)
    with pytest.raises(BadgeError, match="re-badge"):
        c.mint(m, R, 6)
    assert len(c) == before
    assert c.lookup(m).children == []


@pytest.mark.parametrize("badge", [-1, MAX_BADGE + 1, 1 << 64, True, 1.5, "3"])
def test_badge_out_of_range_raises(badge: object) -> None:
    c = cs()
    root = c.insert_original(Ep())
    with pytest.raises(BadgeError):
        c.mint(root, R, badge)  # type: ignore[arg-type]
    assert len(c) == 1
    assert c.lookup(root).children == []


# -- move ----------------------------------------------------------------------------------


def test_move_to_explicit_slot_keeps_tree_position_and_names() -> None:
    c = cs()
    root = c.insert_original(Ep(), name="root")
    child = c.copy(root, R, name="kid")
    grand = c.copy(child, R)
    kid_cap = c.lookup(child)
    new = c.move(child, 30)
    assert new == 30
    assert c.lookup(30) is kid_cap
    assert kid_cap.slot == 30 and kid_cap.cspace is c
    assert kid_cap.parent is c.lookup(root)
    assert c.lookup(grand).parent is kid_cap
    assert c.resolve_name("kid") == 30
    with pytest.raises(EmptySlot, match="moved"):
        c.lookup(child)
    # revoking the root still reaches the moved cap and its child
    assert c.revoke(root) == 2
    assert len(c) == 1


def test_move_without_dest_goes_to_another_slot() -> None:
    c = cs()
    root = c.insert_original(Ep(), name="root")
    child = c.copy(root, R, name="kid")
    cap = c.lookup(child)
    new = c.move(child)
    assert new != child
    assert c.lookup(new) is cap and cap.slot == new
    assert c.resolve_name("kid") == new
    with pytest.raises(EmptySlot):
        c.lookup(child)
    assert len(c) == 2


def test_move_into_occupied_or_bad_dest_refused() -> None:
    c = cs(size=8)
    a = c.insert_original(Ep(), name="a")
    b = c.insert_original(Ntfn(), name="b")
    with pytest.raises(SlotOccupied, match="'b'"):
        c.move(a, b)
    for bad in (0, -1, 8, 1 << 70, True, "2", 2.0):
        with pytest.raises(InvalidSlot):
            c.move(a, bad)  # type: ignore[arg-type]
    assert c.lookup(a).slot == a and c.resolve_name("a") == a
    assert len(c) == 2


def test_move_without_dest_in_full_cspace_refused_and_changes_nothing() -> None:
    c = cs(size=3)  # slots 1 and 2
    a = c.insert_original(Ep(), name="a")
    c.insert_original(Ep())
    with pytest.raises(CSpaceFull):
        c.move(a)
    assert c.lookup(a).slot == a and c.resolve_name("a") == a


def test_move_into_freed_slot() -> None:
    c = cs(size=4)
    a = c.insert_original(Ep())
    b = c.insert_original(Ep())
    c.delete(a)
    assert c.move(b, a) == a
    assert c.lookup(a).obj.kind == "Endpoint"
    c.insert_original(Ep())
    c.insert_original(Ep())
    with pytest.raises(CSpaceFull):
        c.insert_original(Ep())


# -- delete and revoke ------------------------------------------------------------------------


def test_delete_splices_children_onto_parent() -> None:
    c = cs()
    gp = c.insert_original(Ep())
    p = c.copy(gp, R | W)
    k1 = c.copy(p, R)
    k2 = c.mint(p, W, 3)
    c.delete(p)
    gp_cap = c.lookup(gp)
    assert c.lookup(k1).parent is gp_cap and c.lookup(k2).parent is gp_cap
    assert {id(x) for x in gp_cap.children} == {id(c.lookup(k1)), id(c.lookup(k2))}
    with pytest.raises(EmptySlot, match="deleted"):
        c.lookup(p)
    assert c.revoke(gp) == 2
    for s in (k1, k2):
        with pytest.raises(EmptySlot, match="revoked"):
            c.lookup(s)
    assert len(c) == 1


def test_delete_root_orphans_children() -> None:
    c = cs()
    root = c.insert_original(Ep())
    k = c.copy(root)
    c.delete(root)
    assert c.lookup(k).parent is None
    assert c.revoke(k) == 0


def test_revoke_across_cspaces_keeps_self_siblings_ancestors() -> None:
    a, b, d = cs("a", 1), cs("b", 2), cs("d", 3)
    ep = Ep("srv")
    root = a.insert_original(ep, name="root")
    mid = b.insert_derived(a.lookup(root), R | W, None, name="mid")
    sib = d.insert_derived(a.lookup(root), R, None, name="sib")
    x1 = d.insert_derived(b.lookup(mid), W, 9, name="x1")
    x2 = a.insert_derived(d.lookup(x1), W, None)
    x3 = b.copy(mid, R)
    mid_cap = b.lookup(mid)
    assert b.revoke(mid) == 3
    assert b.lookup(mid) is mid_cap and mid_cap.children == []
    assert mid_cap.parent is a.lookup(root)
    assert d.lookup(sib).parent is a.lookup(root)
    with pytest.raises(EmptySlot, match="revoked") as ei:
        d.lookup(x1)
    assert "'d'" in str(ei.value) and "'x1'" in str(ei.value)
    with pytest.raises(EmptySlot, match="revoked"):
        a.lookup(x2)
    with pytest.raises(EmptySlot, match="revoked"):
        b.lookup(x3)
    assert (len(a), len(b), len(d)) == (1, 1, 1)
    # the revoked cap is still usable for deriving again
    again = d.insert_derived(mid_cap, R, None)
    assert d.lookup(again).parent is mid_cap


def test_revoke_cap_function_and_count() -> None:
    c = cs()
    root = c.insert_original(Ep())
    s = root
    for _ in range(10):
        s = c.copy(s)
    assert revoke_cap(c.lookup(root)) == 10
    assert len(c) == 1 and c.lookup(root).children == []


def test_freed_slots_reused_after_revoke() -> None:
    c = cs(size=4)
    root = c.insert_original(Ep())
    c.copy(root)
    c.copy(root)
    with pytest.raises(CSpaceFull):
        c.copy(root)
    c.revoke(root)
    c.copy(root)
    c.copy(root)
    assert len(c) == 3


# -- lookups and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("slot", [0, -1, -(1 << 70), 1 << 70, 10_000, "1", 1.0, None, True, False])
def test_bad_slot_index_raises_invalid_slot(slot: object) -> None:
    c = cs("alice")
    c.insert_original(Ep())
    with pytest.raises(InvalidSlot, match="alice"):
        c.lookup(slot)  # type: ignore[arg-type]


def test_never_filled_slot_is_empty() -> None:
    c = cs()
    a = c.insert_original(Ep())
    c.insert_original(Ep())
    c.delete(a)
    # slot a exists and is empty; nothing beyond the allocated range is EmptySlot
    with pytest.raises(EmptySlot):
        c.lookup(a)
    with pytest.raises(InvalidSlot):
        c.lookup(3)


def test_error_messages_name_domain_slot_name_and_kind() -> None:
    c = cs("alice", 7)
    s = c.insert_original(Ep("svc"), R, name="server")
    with pytest.raises(InsufficientRights) as ei:
        c.lookup(s, W)
    msg = str(ei.value)
    assert "alice" in msg and "pid 7" in msg and f"slot {s}" in msg
    assert "'server'" in msg and "Endpoint" in msg
    assert msg.endswith("lacks right(s) -w-")

    with pytest.raises(WrongObjectType) as ei2:
        c.lookup(s, kind=Ntfn)
    msg = str(ei2.value)
    assert "alice" in msg and "'server'" in msg and "Endpoint" in msg and "Notification" in msg


def test_stale_named_slot_message() -> None:
    c = cs("bob", 3)
    root = c.insert_original(Ep(), name="root")
    s = c.copy(root, name="kid")
    c.delete(s)
    with pytest.raises(EmptySlot) as ei:
        c.lookup(s)
    msg = str(ei.value)
    assert "bob" in msg and "deleted" in msg and "'kid'" in msg
    with pytest.raises(EmptySlot, match="deleted"):
        c.resolve_name("kid")
    # a reused slot no longer carries the stale name
    again = c.copy(root)
    assert again == s
    assert "'kid'" not in c.describe(c.lookup(again))
    with pytest.raises(InvalidSlot):
        c.resolve_name("kid")
    with pytest.raises(InvalidSlot, match="nope"):
        c.resolve_name("nope")


def test_insufficient_rights_each_letter() -> None:
    c = cs()
    s = c.insert_original(Ep(), Rights.NONE)
    for need, letter in ((R, "r"), (W, "w"), (G, "g")):
        with pytest.raises(InsufficientRights) as ei:
            c.lookup(s, need)
        assert ei.value.args[0].endswith(need.short())
        assert letter in need.short()
    c2 = cs()
    s2 = c2.insert_original(Ep(), R | G)
    assert c2.lookup(s2, R | G).rights == R | G
    with pytest.raises(InsufficientRights, match="-w-"):
        c2.lookup(s2, Rights.ALL)


def test_wrong_object_type() -> None:
    c = cs()
    e = c.insert_original(Ep())
    n = c.insert_original(Ntfn())
    assert c.lookup(e, kind=Ep).obj.kind == "Endpoint"
    assert c.lookup(n, kind=Ntfn).obj.kind == "Notification"
    assert c.lookup(e, kind=KObject).obj.kind == "Endpoint"  # a subclass is a KObject
    with pytest.raises(WrongObjectType, match="not a Notification"):
        c.lookup(e, kind=Ntfn)
    with pytest.raises(WrongObjectType, match="not a Endpoint"):
        c.lookup(n, W, kind=Ep)


def test_cspace_full_and_failed_mint_changes_nothing() -> None:
    c = cs(size=3)  # two usable slots
    root = c.insert_original(Ep(), name="root")
    c.insert_original(Ntfn())
    with pytest.raises(CSpaceFull, match="full"):
        c.insert_original(Ep())
    root_cap = c.lookup(root)
    with pytest.raises(CSpaceFull):
        c.mint(root, R, 5)
    with pytest.raises(CSpaceFull):
        c.copy(root)
    assert root_cap.children == []
    assert len(c) == 2
    assert sorted(i.slot for i in c.info()) == [1, 2]
    # another CSpace with room may still receive a derived cap
    other = cs("o", 2)
    other.insert_derived(root_cap, R, 4)
    assert len(root_cap.children) == 1


def test_client_slot_messages_name_domain_slot_and_kind() -> None:
    srv, cli = cs("server", 1), cs("app", 2)
    root = srv.insert_original(Ep("svc"), name="svc")
    s = cli.insert_derived(srv.lookup(root), W, 3, name="client")
    with pytest.raises(InsufficientRights) as ei:
        cli.lookup(s, R)
    msg = str(ei.value)
    assert "'app'" in msg and "'client'" in msg and "Endpoint" in msg and "r--" in msg
    srv.revoke(root)
    with pytest.raises(EmptySlot) as ei2:
        cli.lookup(s, W)
    msg = str(ei2.value)
    assert "'app'" in msg and "'client'" in msg and "revoked" in msg and "Endpoint" in msg


def test_name_slot_and_info() -> None:
    a, b = cs("a", 1), cs("b", 2)
    root = a.insert_original(Ep("svc"), name="root")
    m = b.insert_derived(a.lookup(root), R | W, 11)
    b.name_slot(m, "client")
    (info,) = b.info()
    assert info.slot == m and info.name == "client" and info.kind == "Endpoint"
    assert info.object_name == "svc" and info.rights == "rw-" and info.badge == 11
    assert info.parent == (1, root)
    with pytest.raises(InvalidSlot):
        b.name_slot(m + 1, "x")
    b.delete(m)
    with pytest.raises(EmptySlot):
        b.name_slot(m, "x")


def test_clear_all() -> None:
    a, b = cs("a", 1), cs("b", 2)
    root = a.insert_original(Ep())
    mid = b.insert_derived(a.lookup(root), R, None)
    leaf = a.insert_derived(b.lookup(mid), R, None)
    removed = b.clear_all("domain died")
    assert len(removed) == 1 and len(b) == 0
    assert a.lookup(leaf).parent is a.lookup(root)
    with pytest.raises(EmptySlot, match="domain died"):
        b.lookup(mid)


def test_rights_parse() -> None:
    assert Rights.parse("rw") == R | W
    assert Rights.parse("RWG") == Rights.ALL
    assert Rights.parse("---") == Rights.NONE
    assert Rights.parse(5) == R | G
    assert Rights.parse(W) == W
    with pytest.raises(ValueError):
        Rights.parse("x")
    with pytest.raises(ValueError):
        Rights.parse(8)
    assert (R | G).short() == "r-g"


# -- state machine ----------------------------------------------------------------------------

RIGHTS = st.sampled_from([Rights(r) for r in range(8)])
BADGE = st.one_of(st.none(), st.integers(1, 5))


class CSpaceMachine(RuleBasedStateMachine):
    """Model: for every live cap, its model parent, rights, badge; plus revoked caps."""

    @initialize()
    def boot(self) -> None:
        self.spaces = [CSpace(f"d{i}", i, size=24) for i in range(3)]
        self.objs = [Ep("e0"), Ntfn("n0"), Ep("e1")]
        # model: id(cap) -> (cap, model parent or None)
        self.parent: dict[int, Cap | None] = {}
        self.root: dict[int, Cap] = {}  # id(cap) -> the original it derives from
        self.rb: dict[int, tuple[Rights, int]] = {}  # id(cap) -> rights, badge at birth
        self.live: dict[int, Cap] = {}
        self.count = [0, 0, 0]
        self.gone_for_good: list[Cap] = []
        for i, obj in enumerate(self.objs):
            s = self.spaces[i].insert_original(obj)
            self._add(self.spaces[i].lookup(s), None, i)

    def _add(self, cap: Cap, parent: Cap | None, space: int) -> None:
        self.live[id(cap)] = cap
        self.parent[id(cap)] = parent
        self.root[id(cap)] = cap if parent is None else self.root[id(parent)]
        self.rb[id(cap)] = (cap.rights, cap.badge)
        self.count[space] += 1

    def _space_index(self, cap: Cap) -> int:
        assert cap.cspace is not None
        return self.spaces.index(cap.cspace)

    def _model_descendants(self, cap: Cap) -> list[Cap]:
        out, frontier = [], [cap]
        while frontier:
            p = frontier.pop()
            for c in self.live.values():
                if self.parent[id(c)] is p:
                    out.append(c)
                    frontier.append(c)
        return out

    def _remove(self, cap: Cap, space: int) -> None:
        del self.live[id(cap)]
        del self.parent[id(cap)]
        del self.root[id(cap)]
        del self.rb[id(cap)]
        self.count[space] -= 1

    def _pick(self, data: st.DataObject) -> Cap | None:
        if not self.live:
            return None
        caps = sorted(self.live.values(), key=lambda c: (self._space_index(c), c.slot))
        return data.draw(st.sampled_from(caps))

    def _derive(self, src: Cap, dst: int, rights: Rights, badge: int | None, how: str) -> None:
        space = self.spaces[dst]
        full = self.count[dst] >= space.size - 1
        rebadge = badge is not None and src.badge not in (0, badge)
        try:
            if how == "copy":
                s = space.copy(src.slot, rights)
            elif how == "mint":
                s = space.mint(src.slot, rights, badge)  # type: ignore[arg-type]
            else:
                s = space.insert_derived(src, rights, badge)
        except BadgeError:
            assert rebadge
            return
        except CSpaceFull:
            assert full and not rebadge
            return
        assert not rebadge and not full
        cap = space.lookup(s)
        assert cap.rights == rights & src.rights
        assert cap.badge == (src.badge if badge is None else badge)
        self._add(cap, src, dst)

    @rule(data=st.data(), rights=RIGHTS)
    def copy(self, data: st.DataObject, rights: Rights) -> None:
        src = self._pick(data)
        if src is not None:
            self._derive(src, self._space_index(src), rights, None, "copy")

    @rule(data=st.data(), rights=RIGHTS, badge=BADGE)
    def mint(self, data: st.DataObject, rights: Rights, badge: int | None) -> None:
        src = self._pick(data)
        if src is not None:
            self._derive(src, self._space_index(src), rights, badge, "mint")

    @rule(data=st.data(), rights=RIGHTS, badge=BADGE, to=st.integers(0, 2))
    def transfer(self, data: st.DataObject, rights: Rights, badge: int | None, to: int) -> None:
        src = self._pick(data)
        if src is not None:
            self._derive(src, to, rights, badge, "insert")

    @rule(data=st.data(), dest=st.one_of(st.none(), st.integers(1, 23)))
    def move(self, data: st.DataObject, dest: int | None) -> None:
        cap = self._pick(data)
        if cap is None:
            return
        space = cap.cspace
        assert space is not None
        old, parent, kids = cap.slot, cap.parent, list(cap.children)
        try:
            new = space.move(old, dest)
        except SlotOccupied:
            assert dest is not None
            assert space._slots[dest] is not None
            return
        except CSpaceFull:
            assert dest is None and self.count[self._space_index(cap)] == space.size - 1
            return
        assert space.lookup(new) is cap and cap.slot == new and new != old
        assert cap.parent is parent and cap.children == kids
        if dest is not None:
            assert new == dest

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        cap = self._pick(data)
        if cap is None:
            return
        space = self._space_index(cap)
        new_parent = self.parent[id(cap)]
        for c in self.live.values():
            if self.parent[id(c)] is cap:
                self.parent[id(c)] = new_parent
        cap.cspace.delete(cap.slot)  # type: ignore[union-attr]
        self._remove(cap, space)
        assert cap.cspace is None and cap.parent is None

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        cap = self._pick(data)
        if cap is None:
            return
        below = [(c, self._space_index(c)) for c in self._model_descendants(cap)]
        n = cap.cspace.revoke(cap.slot)  # type: ignore[union-attr]
        assert n == len(below)
        for c, space in below:
            self._remove(c, space)
            self.gone_for_good.append(c)
        assert id(cap) in self.live and cap.cspace is not None

    # -- invariants ----------------------------------------------------------------------------

    def _all_caps(self) -> list[Cap]:
        return [c for s in self.spaces for c in s.caps()]

    @invariant()
    def revoked_never_survive(self) -> None:
        alive = {id(c) for c in self._all_caps()}
        for c in self.gone_for_good:
            assert id(c) not in alive
            assert c.cspace is None and c.slot == -1

    @invariant()
    def rights_never_grow_and_badges_follow(self) -> None:
        for c in self._all_caps():
            assert (c.rights, c.badge) == self.rb[id(c)]  # never changed after birth
            root = self.root[id(c)]
            assert c.rights & ~root.rights == 0
            assert c.obj is root.obj
            if root.badge:
                assert c.badge == root.badge
            if c.parent is not None:
                assert c.rights & ~c.parent.rights == 0
                if c.parent.badge:
                    assert c.badge == c.parent.badge
                assert c.obj is c.parent.obj

    @invariant()
    def links_consistent(self) -> None:
        caps = self._all_caps()
        assert {id(c) for c in caps} == set(self.live)
        for c in caps:
            assert c.cspace is not None and c.cspace.lookup(c.slot) is c
            assert c.parent is self.parent[id(c)]
            if c.parent is not None:
                assert c.parent.cspace is not None
                assert sum(1 for k in c.parent.children if k is c) == 1
            for k in c.children:
                assert k.parent is c
                assert k.cspace is not None

    @invariant()
    def counts_match(self) -> None:
        for i, s in enumerate(self.spaces):
            assert len(s) == self.count[i]
            assert len(s.info()) == self.count[i]


CSpaceMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCSpaceMachine = CSpaceMachine.TestCase


@pytest.mark.parametrize("bad", ["rwz", None, 1.5, 99, -1, True, b"rw", ["r"]])
def test_rights_parse_refuses_with_a_typed_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        Rights.parse(bad)  # type: ignore[arg-type]
