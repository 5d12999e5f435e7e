"""The trusted computing base never imports an untrusted server (checked on the AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import capkern

PKG = Path(capkern.__file__).parent
UNTRUSTED = ("capkern.servers.pager", "capkern.servers.blockdev", "capkern.testing",
             "capkern._demo", "capkern._repl", "capkern._cli", "capkern.programs")
TCB = ["kernel.py", "_config.py", "_root.py", "_quota.py", "_exits.py", "_states.py",
       "_domain.py", "_proc.py", "_cspace.py",
       "_ipc.py", "_queue.py", "_message.py", "_reply.py", "_notify.py", "_wire.py", "_contract.py",
       "_protocols.py", "_pagefmt.py", "_nbdaddr.py", "errors.py", "_trace.py", "_serverloop.py",
       "mmu", "servers/crypt", "pagerset", "isolation"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append(mod)
            found += [f"{mod}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("capkern.")):
            found.append(node.value)  # importlib by name counts too, except below
    return found


def test_tcb_imports_nothing_untrusted() -> None:
    files = []
    for entry in TCB:
        p = PKG / entry
        # every entry must name something real: a renamed module must not silently
        # drop out of the check
        assert p.is_file() or (p.is_dir() and (p / "__init__.py").is_file()), entry
        found = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        assert found, entry
        files += found
    # the directories really were walked: their modules are all in the list
    walked = {f.relative_to(PKG).as_posix() for f in files}
    assert {"mmu/_vm.py", "mmu/_frames.py", "servers/crypt/_server.py",
            "servers/crypt/_sealer.py"} <= walked, walked
    bad = []
    for f in files:
        for mod in _imports(f):
            if any(mod == u or mod.startswith(u + ".") for u in UNTRUSTED):  # whole names:
                # capkern._reply is not capkern._repl
                bad.append(f"{f.relative_to(PKG)} -> {mod}")
    # the one sanctioned reference: the kernel *starts* the default pager and block
    # device programs by name, as untrusted domains, and only talks to them over IPC
    allowed = {"_root.py -> capkern.servers.pager",
               "_root.py -> capkern.servers.blockdev"}
    assert set(bad) <= allowed, bad
