"""``kernel.dump()`` in its three forms (JSON data, capDL-style text, Graphviz DOT) and
``capkern dump``: each text form says exactly what the JSON form says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import capkern
from capkern import Grant, programs
from capkern._cli import main
from capkern._dumpdemo import run_dump
from capkern._sysdump import to_capdl, to_dot
from capkern.errors import ConfigError


@pytest.fixture(scope="module")
def scenario() -> dict[str, Any]:
    out = run_dump("json")
    assert isinstance(out, dict)
    return out


def _caps(dump: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    return {(d["pid"], c["slot"]): c for d in dump["domains"] for c in d["caps"]}


def test_scenario_has_every_shape(scenario: dict[str, Any]) -> None:
    caps = _caps(scenario)
    states = {d["name"]: d["state"] for d in scenario["domains"]}
    assert states["client1"] == "exited" and states["holder"] == "running"
    # a grandchild: holder's cap came from client2's copy of its root-derived cap
    (held,) = [c for (pid, _s), c in caps.items()
               if c["name"] == "from-client"]
    parent = caps[tuple(held["parent"])]
    assert parent["name"] == "spare" and caps[tuple(parent["parent"])]["name"] == "server"
    # the revoked mint left its domain with no capability
    (revoked,) = [d for d in scenario["domains"] if d["name"] == "revoked"]
    assert revoked["caps"] == []


def test_capdl_names_every_object_and_lists_every_slot(scenario: dict[str, Any]) -> None:
    text = to_capdl(scenario)
    objects_part, caps_part = text.split("\ncaps {\n")
    declared = dict(re.findall(r"^  (\w+) = (\w+)", objects_part, re.M))
    assert len([k for k, v in declared.items() if v != "cnode"]) == len(scenario["objects"])
    for obj in scenario["objects"]:
        (ident,) = [k for k in declared if k.split("_")[1] == str(obj["oid"])
                    and not k.startswith("cnode")]
        assert obj["name"].replace("-", "_") in ident
    # every cap line names a declared object, with its rights and badge, under its cnode
    blocks = re.findall(r"^  (\w+) \{\n(.*?)^  \}", caps_part, re.M | re.S)
    assert len(blocks) == len(scenario["domains"])
    for (cnode, body), dom in zip(blocks, scenario["domains"], strict=True):
        assert declared[cnode] == "cnode" and cnode.startswith(f"cnode_{dom['pid']}")
        lines = re.findall(r"^    (\d+): (\w+) \(([^)]*)\)", body, re.M)
        assert len(lines) == len(dom["caps"])
        for (slot, obj, attrs), cap in zip(lines, dom["caps"], strict=True):
            assert int(slot) == cap["slot"] and obj in declared
            assert obj.split("_")[1] == str(cap["object"])
            assert attrs.split(",")[0] == (cap["rights"].replace("-", "").upper() or "-")
            assert (f"badge: {cap['badge']}" in attrs) == bool(cap["badge"])


def test_dot_edges_are_the_derivation_tree(scenario: dict[str, Any]) -> None:
    text = to_dot(scenario)
    assert text.startswith("digraph capkern {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = set(re.findall(r"^\s+(cap_\d+_\d+) \[label=", text, re.M))
    edges = set(re.findall(r"^  (cap_\d+_\d+) -> (cap_\d+_\d+);", text, re.M))
    roots = set(re.findall(r"^  (\w+) -> (cap_\d+_\d+) \[style=dashed\];", text, re.M))
    caps = _caps(scenario)
    assert nodes == {f"cap_{p}_{s}" for p, s in caps}
    want = {(f"cap_{c['parent'][0]}_{c['parent'][1]}", f"cap_{p}_{s}")
            for (p, s), c in caps.items() if c["parent"] is not None}
    assert edges == want
    assert {child for _obj, child in roots} == {f"cap_{p}_{s}" for (p, s), c in caps.items()
                                                if c["parent"] is None}


def test_dot_escapes_names() -> None:
    dump = {"objects": [{"oid": 1, "kind": "Endpoint", "name": 'a"b\\c'}],
            "domains": [{"pid": 3, "name": 'we"ird', "kind": "process", "state": "running",
                         "exit": None, "reply": None,
                         "caps": [{"slot": 1, "name": "x\ny", "object": 1, "rights": "rw-",
                                   "badge": 0, "parent": None}]}]}
    text = to_dot(dump)
    for line in text.splitlines():  # every quoted string closes on its own line
        assert len(re.sub(r'\\.', "", line).split('"')) % 2 == 1, line
    assert 'we\\"ird' in text and "x\\ny" in text


async def test_kernel_dump_formats_and_bad_format(bare_kernel: capkern.Kernel) -> None:
    k = bare_kernel
    ep = k.new_endpoint("svc")
    k.spawn(programs.echo_server, name="srv", caps={"service": Grant(ep, "r")})
    data = k.dump()
    assert json.loads(json.dumps(data)) == data
    assert "ep_" in k.dump("capdl") and "svc" in k.dump("capdl")
    assert k.dump("dot").startswith("digraph")
    with pytest.raises(ConfigError, match="capdl"):
        k.dump("yaml")  # type: ignore[call-overload]


@pytest.mark.parametrize("fmt", ["capdl", "dot", "json"])
def test_capkern_dump_command(fmt: str, tmp_path: Path) -> None:
    out, trace = tmp_path / f"dump.{fmt}", tmp_path / "trace.json"
    assert main(["dump", "--format", fmt, "-o", str(out), "--trace", str(trace)]) == 0
    text = out.read_text()
    if fmt == "json":
        assert {d["name"] for d in json.loads(text)["domains"]} >= {"holder", "client2"}
    else:
        assert "client2" in text
    assert json.loads(trace.read_text())["traceEvents"]
