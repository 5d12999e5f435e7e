"""``kernel.dump()``: a picture of the system, as JSON data, capDL-style text or DOT.

:func:`snapshot` walks the kernel's tables once and returns plain JSON-serialisable data
(domains with their exit status and pending implicit reply, objects, capabilities and
the derivation tree: each capability names its parent as ``[pid, slot]``).  The two text
forms are pure functions of that data (sans-IO), so they can be produced from a dump
saved earlier as well as from a live kernel:

* :func:`to_capdl` -- the seL4 capability distribution language's shape: an ``objects``
  section naming every kernel object (and one CNode per domain's CSpace), then a ``caps``
  section listing each CSpace's slots, ``slot: object (rights, badge: n)``, with the
  derivation parent in a comment.
* :func:`to_dot` -- a Graphviz digraph of the capability derivation tree: one cluster per
  domain, one node per capability, an edge from each capability to those derived from
  it, and a dashed edge from each object to its original (underived) capabilities.

This module reads kernel state only; it imports no untrusted code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ._ipc import Endpoint, ReplyObject
from ._states import ReplyState

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._domain import Domain
    from ._trace import Counters

__all__ = ["DUMP_FORMATS", "render", "snapshot", "to_capdl", "to_dot"]

#: the forms ``kernel.dump(format=...)`` and ``capkern dump --format`` produce
DUMP_FORMATS = ("json", "capdl", "dot")

_CAPDL_KIND = {"Endpoint": "ep", "Notification": "notification", "Reply": "reply"}


def snapshot(domains_in: Iterable[Domain], stats: Counters) -> dict[str, Any]:
    """The JSON form of the kernel's ``domains`` and counters: ``{"domains": [...],
    "objects": [...], "stats": {...}}``."""
    objects: dict[int, dict[str, Any]] = {}
    domains = []
    for dom in domains_in:
        caps: list[dict[str, Any]] = []
        names = {s: n for n, s in dom.cspace.names.items()}
        for cap in dom.cspace.caps():
            obj = cap.obj
            if obj.oid not in objects:
                objects[obj.oid] = _describe_object(obj)
            parent = cap.parent
            caps.append(
                {
                    "slot": cap.slot,
                    "name": str(names.get(cap.slot, "")),
                    "object": obj.oid,
                    "rights": cap.rights.short(),
                    "badge": cap.badge,
                    "parent": [parent.cspace.pid, parent.slot]
                    if parent is not None and parent.cspace is not None
                    else None,
                }
            )
        reply = dom.reply
        pending = reply if reply is not None and reply.state == ReplyState.WAITING else None
        if pending is not None and pending.oid not in objects:
            objects[pending.oid] = _describe_object(pending)
        ended = dom.exit
        domains.append(
            {
                "pid": dom.pid,
                "name": str(dom.name),
                "kind": dom.kind,
                "state": dom.state,
                "exit": None
                if ended is None
                else {"state": ended.state, "code": ended.code, "error": ended.error},
                "reply": None if pending is None else pending.oid,
                "caps": caps,
            }
        )
    return {
        "domains": domains,
        "objects": sorted(objects.values(), key=lambda o: int(o["oid"])),
        "stats": stats.as_dict(),
    }


def _describe_object(obj: Any) -> dict[str, Any]:
    """One object of the dump: identity plus its kernel state."""
    out: dict[str, Any] = {"oid": obj.oid, "kind": obj.kind, "name": str(obj.name)}
    if isinstance(obj, Endpoint):
        out["contract"] = None if obj.contract is None else str(obj.contract.name)
        out["senders"] = [b.dom.pid for b in obj.senders]
        out["receivers"] = [b.dom.pid for b in obj.receivers]
    elif isinstance(obj, ReplyObject):
        out["caller"] = obj.caller_dom.pid
        out["state"] = obj.state
    return out


def render(dump: dict[str, Any], fmt: str) -> str:
    """``dump`` (from :func:`snapshot`) as text in ``fmt``: capdl or dot."""
    if fmt == "capdl":
        return to_capdl(dump)
    if fmt == "dot":
        return to_dot(dump)
    from .errors import ConfigError

    raise ConfigError(f"dump format must be one of {', '.join(DUMP_FORMATS)}, not {fmt!r}")


def _ident(text: str) -> str:
    """A capDL/DOT identifier fragment from a free-form name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:40]


def _object_names(dump: dict[str, Any]) -> dict[int, str]:
    """oid -> a unique, readable identifier: ``ep_3_echo``, ``notification_7``..."""
    out = {}
    for obj in dump["objects"]:
        base = f"{_CAPDL_KIND.get(obj['kind'], obj['kind'].lower())}_{obj['oid']}"
        name = _ident(obj["name"])
        out[int(obj["oid"])] = f"{base}_{name}" if name else base
    return out


def _cnode_name(dom: dict[str, Any]) -> str:
    name = _ident(dom["name"])
    return f"cnode_{dom['pid']}" + (f"_{name}" if name else "")


def _capdl_rights(rights: str) -> str:
    return "".join(ch.upper() for ch in rights if ch != "-")


def to_capdl(dump: dict[str, Any]) -> str:
    """capDL-style text: every object with a name, then every CSpace's slots."""
    names = _object_names(dump)
    cnodes = {int(d["pid"]): _cnode_name(d) for d in dump["domains"]}
    lines = ["arch capkern", "", "objects {"]
    for obj in dump["objects"]:
        attrs = []
        if obj["name"]:
            attrs.append(f"name: {obj['name']!r}")
        if obj.get("contract"):
            attrs.append(f"contract: {obj['contract']}")
        for key in ("senders", "receivers"):
            if obj.get(key):
                attrs.append(f"blocked {key}: pids {', '.join(map(str, obj[key]))}")
        if obj["kind"] == "Reply":
            attrs.append(f"caller: pid {obj['caller']}, {obj['state']}")
        kind = _CAPDL_KIND.get(obj["kind"], obj["kind"].lower())
        comment = f"  -- {'; '.join(attrs)}" if attrs else ""
        lines.append(f"  {names[int(obj['oid'])]} = {kind}{comment}")
    for dom in dump["domains"]:
        state = dom["state"]
        if dom["exit"] is not None and dom["exit"]["code"] is not None:
            state += f" code={dom['exit']['code']}"
        lines.append(f"  {cnodes[int(dom['pid'])]} = cnode  -- domain {dom['name']!r} "
                     f"(pid {dom['pid']}, {dom['kind']}, {state})")
    lines += ["}", "", "caps {"]
    for dom in dump["domains"]:
        lines.append(f"  {cnodes[int(dom['pid'])]} {{")
        for cap in dom["caps"]:
            attrs = [_capdl_rights(cap["rights"]) or "-"]
            if cap["badge"]:
                attrs.append(f"badge: {cap['badge']}")
            slot_name = f" {cap['name']!r}" if cap["name"] else ""
            parent = cap["parent"]
            origin = ("original" if parent is None else
                      f"from {cnodes.get(int(parent[0]), f'pid {parent[0]}')}:{parent[1]}")
            lines.append(f"    {cap['slot']}: {names[int(cap['object'])]} ({', '.join(attrs)})"
                         f"  --{slot_name} {origin}")
        if dom["reply"] is not None:
            lines.append(f"    -- implicit reply slot: {names[int(dom['reply'])]}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped; \\n kept as a break)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(dump: dict[str, Any]) -> str:
    """A Graphviz digraph of the capability derivation tree."""
    names = _object_names(dump)
    lines = ["digraph capkern {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for obj in dump["objects"]:
        label = f"{obj['kind']}#{obj['oid']}" + (f"\n{obj['name']}" if obj["name"] else "")
        lines.append(f"  {names[int(obj['oid'])]} [shape=ellipse, label={_dot_str(label)}];")
    edges = []
    by_oid = {int(o["oid"]): o for o in dump["objects"]}
    for dom in dump["domains"]:
        pid = int(dom["pid"])
        title = f"{dom['name']} (pid {pid}, {dom['kind']}, {dom['state']})"
        lines.append(f"  subgraph cluster_{pid} {{")
        lines.append(f"    label={_dot_str(title)};")
        for cap in dom["caps"]:
            node = f"cap_{pid}_{cap['slot']}"
            obj = by_oid[int(cap["object"])]
            text = f"slot {cap['slot']}" + (f" {cap['name']}" if cap["name"] else "")
            text += f"\n{obj['kind']}#{obj['oid']}" + (f" {obj['name']}" if obj["name"] else "")
            text += f"\n[{cap['rights']}]" + (f" badge {cap['badge']}" if cap["badge"] else "")
            lines.append(f"    {node} [label={_dot_str(text)}];")
            parent = cap["parent"]
            if parent is None:
                edges.append(f"  {names[int(cap['object'])]} -> {node} [style=dashed];")
            else:
                edges.append(f"  cap_{int(parent[0])}_{int(parent[1])} -> {node};")
        lines.append("  }")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"
