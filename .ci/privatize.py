#!/usr/bin/env python3
"""Rewrite references to capkern's old public-looking module paths (issue 14 item 5).

capkern's private modules got a leading underscore (``ipc.py -> _ipc.py``,
``mmu/vm.py -> mmu/_vm.py``, ...).  A branch written before that still says
``from .ipc import``, ``capkern.mmu.vm``, ``mmu/vm.py``.  After merging such a branch,
run this from the repository root: it rewrites imports (relative, absolute,
``from . import ipc`` -> ``from . import _ipc as ipc``), dotted names in code and
strings (lazy imports, ``python -m``), and file references in README.md and docs/.
It is idempotent and only touches references to the modules in ``RENAMED``.

    python .ci/privatize.py                    # rewrite
    python .ci/privatize.py --check            # list files it would change; exit 1 if any
    python .ci/privatize.py --mv mmu/watchdog.py=mmu/_watchdog.py   # git mv a new
                                               # module too, then rewrite its references

Then ``ruff check --fix --select I src tests benchmarks`` sorts the rewritten imports.
A new module that should be public goes on PUBLIC_MODULES in tests/test_public_api.py.

Merging a branch across the renames: where both sides changed an import block, git
reports a conflict.  Take the other side's version of those files whole
(``git checkout --ours FILE`` when main merges the rename branch, ``--theirs`` the other
way round), then run this script: it redoes the renames' import changes on top, and
imports of a server package's private module from outside it become imports from the
package when the package re-exports the names (so the private-import test holds).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

#: old path -> new path, relative to src/capkern (the renames of issue 14 item 5)
RENAMED = {
    "bench.py": "_bench.py",
    "bench_pagerset.py": "_bench_pagerset.py",
    "bench_paging.py": "_bench_paging.py",
    "cli.py": "_cli.py",
    "config.py": "_config.py",
    "contract.py": "_contract.py",
    "cspace.py": "_cspace.py",
    "demo.py": "_demo.py",
    "demo_sets.py": "_demo_sets.py",
    "domain.py": "_domain.py",
    "dumpdemo.py": "_dumpdemo.py",
    "exits.py": "_exits.py",
    "insecure.py": "_insecure.py",
    "ipc.py": "_ipc.py",
    "isolation/boot.py": "isolation/_boot.py",
    "isolation/child.py": "isolation/_child.py",
    "isolation/framing.py": "isolation/_framing.py",
    "isolation/ledger.py": "isolation/_ledger.py",
    "isolation/messages.py": "isolation/_messages.py",
    "isolation/proxy.py": "isolation/_proxy.py",
    "isolation/spec.py": "isolation/_spec.py",
    "lab/cli.py": "lab/_cli.py",
    "lab/reference.py": "lab/_reference.py",
    "lab/sim.py": "lab/_sim.py",
    "lab/sweep.py": "lab/_sweep.py",
    "lab/workloads.py": "lab/_workloads.py",
    "mmu/aspace.py": "mmu/_aspace.py",
    "mmu/batch.py": "mmu/_batch.py",
    "mmu/binding.py": "mmu/_binding.py",
    "mmu/discards.py": "mmu/_discards.py",
    "mmu/evict.py": "mmu/_evict.py",
    "mmu/frames.py": "mmu/_frames.py",
    "mmu/framesupply.py": "mmu/_framesupply.py",
    "mmu/framewait.py": "mmu/_framewait.py",
    "mmu/pageio.py": "mmu/_pageio.py",
    "mmu/ports.py": "mmu/_ports.py",
    "mmu/readahead.py": "mmu/_readahead.py",
    "mmu/reflog.py": "mmu/_reflog.py",
    "mmu/release.py": "mmu/_release.py",
    "mmu/residency.py": "mmu/_residency.py",
    "mmu/vm.py": "mmu/_vm.py",
    "nbdaddr.py": "_nbdaddr.py",
    "pagefmt.py": "_pagefmt.py",
    "pagerset/erasure.py": "pagerset/_erasure.py",
    "pagerset/members.py": "pagerset/_members.py",
    "pagerset/placement.py": "pagerset/_placement.py",
    "pagerset/port.py": "pagerset/_port.py",
    "proc.py": "_proc.py",
    "protocols.py": "_protocols.py",
    "quota.py": "_quota.py",
    "repl.py": "_repl.py",
    "replhelp.py": "_replhelp.py",
    "root.py": "_root.py",
    "serverloop.py": "_serverloop.py",
    "servers/blockdev/server.py": "servers/blockdev/_server.py",
    "servers/crypt/server.py": "servers/crypt/_server.py",
    "servers/pager/remote.py": "servers/pager/_remote.py",
    "servers/pager/server.py": "servers/pager/_server.py",
    "services.py": "_services.py",
    "states.py": "_states.py",
    "sysdump.py": "_sysdump.py",
    "testing/assertions.py": "testing/_assertions.py",
    "testing/attackers.py": "testing/_attackers.py",
    "trace.py": "_trace.py",
    "trace_export.py": "_trace_export.py",
    "wire.py": "_wire.py",
}

DOTTED = re.compile(r"\bcapkern(?:\.[A-Za-z_]\w*)+")
FILE = re.compile(r"(?<![\w/.-])((?:capkern/)?(?:[a-z_]+/)*)([a-z_]\w*\.py)\b")
FROM_REL = re.compile(r"^(\s*)from (\.+)([\w.]*) import (.*)$")
FROM_ABS = re.compile(r"^(\s*)from (capkern[\w.]*) import (.*)$")
SERVER_PRIVATE = re.compile(r"^capkern\.servers\.(\w+)\._\w+$")
LAZY_SERVER = re.compile(r"""import_module\((["'])capkern\.servers\.(\w+)\.server\1\)""")


def server_exports(package: str) -> set[str]:
    """The names ``capkern.servers.<package>`` lists in ``__all__`` (read from its AST)."""
    init = Path("src/capkern/servers", package, "__init__.py")
    if not init.is_file():
        return set()
    for node in ast.walk(ast.parse(init.read_text())):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
            return {str(e.value) for e in node.value.elts if isinstance(e, ast.Constant)}
    return set()


def dotted(path: str) -> str:
    return "capkern." + path.removesuffix(".py").replace("/", ".")


class Rewriter:
    def __init__(self, renamed: dict[str, str]) -> None:
        self.renamed = renamed
        self.modules = {dotted(o): dotted(n) for o, n in renamed.items()}
        self.by_base: dict[str, list[str]] = {}
        for old in renamed:
            self.by_base.setdefault(old.rsplit("/", 1)[-1], []).append(old)

    def module(self, name: str) -> str:
        """Longest prefix of dotted ``name`` that is a renamed module -> its new name."""
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            new = self.modules.get(".".join(parts[:i]))
            if new:
                return ".".join([new, *parts[i:]])
        return name

    def public(self, newabs: str, here: str, text: str) -> str:
        """A server package's private module, imported from outside that package, is
        replaced by the package when it re-exports every name imported (the testing kit
        and the kernel use servers through their public names only; tests, ``here``
        empty, may test a server's internals)."""
        mo = SERVER_PRIVATE.match(newabs)
        if mo is None or not here or here.startswith(newabs.rsplit(".", 1)[0]):
            return newabs
        wanted = {t.strip().partition(" as ")[0] for t in text.strip(" ()").split(",")}
        wanted.discard("")
        if wanted and wanted <= server_exports(mo[1]):
            return newabs.rsplit(".", 1)[0]
        return newabs

    def names(self, absmod: str, text: str) -> str:
        """``from absmod import a, b``: a name that is a renamed module becomes ``_a as a``."""
        out = []
        for tok in text.split(","):
            name, _, alias = tok.strip().partition(" as ")
            new = self.modules.get(f"{absmod}.{name}")
            if name and new:
                lead = tok[: len(tok) - len(tok.lstrip())]
                trail = tok[len(tok.rstrip()):]
                tok = f"{lead}{new.rsplit('.', 1)[1]} as {alias or name}{trail}"
            out.append(tok)
        return ",".join(out)

    def file_ref(self, mo: re.Match[str]) -> str:
        d, f = mo.groups()
        if d.startswith(("tests/", "benchmarks/")):
            return mo.group(0)
        rel = d.removeprefix("capkern/") + f
        if rel in self.renamed:
            return ("capkern/" if d.startswith("capkern/") else "") + self.renamed[rel]
        olds = self.by_base.get(f, [])
        if not d and len(olds) == 1:
            return self.renamed[olds[0]].rsplit("/", 1)[-1]
        return mo.group(0)

    def python(self, path: Path, text: str) -> str:
        package: list[str] = []
        if path.parts[:2] == ("src", "capkern"):
            package = list(path.with_suffix("").parts[1:-1])
        out, cont = [], None
        for line in text.split("\n"):
            if cont is not None:  # inside a parenthesized from-import
                code, hash_, comment = line.partition("#")
                line = self.names(cont, code) + hash_ + comment
                cont = None if ")" in code else cont
            elif (mo := FROM_REL.match(line)) and package:
                ind, dots, mod, rest = mo.groups()
                base = package[: len(package) - len(dots) + 1]
                absmod = ".".join([*base, *([mod] if mod else [])])
                code, hash_, comment = rest.partition("#")
                newabs = self.public(self.module(absmod), ".".join(package), code)
                mod = ".".join(newabs.split(".")[len(base):])
                cont = absmod if "(" in code and ")" not in code else None
                line = f"{ind}from {dots}{mod} import {self.names(absmod, code)}{hash_}{comment}"
            elif mo := FROM_ABS.match(line):
                ind, absmod, rest = mo.groups()
                code, hash_, comment = rest.partition("#")
                cont = absmod if "(" in code and ")" not in code else None
                newabs = self.public(self.module(absmod), ".".join(package), code)
                line = f"{ind}from {newabs} import {self.names(absmod, code)}{hash_}{comment}"
            else:
                if not ".".join(package).startswith("capkern.servers."):
                    line = LAZY_SERVER.sub(r"import_module(\1capkern.servers.\2\1)", line)
                line = DOTTED.sub(lambda m: self.module(m.group(0)), line)
                line = FILE.sub(self.file_ref, line)
            out.append(line)
        return "\n".join(out)

    def markdown(self, text: str) -> str:
        text = DOTTED.sub(lambda m: self.module(m.group(0)), text)
        return FILE.sub(self.file_ref, text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    renamed = dict(RENAMED)
    moves = [a.split("=", 1) for i, a in enumerate(argv) if i and argv[i - 1] == "--mv"]
    for old, new in moves:
        renamed[old] = new
        if not check:
            subprocess.run(["git", "mv", f"src/capkern/{old}", f"src/capkern/{new}"], check=True)
    rw = Rewriter(renamed)
    files = [p for d in ("src", "tests", "benchmarks") for p in Path(d).rglob("*.py")]
    docs = [Path("README.md"), *Path("docs").glob("*.md")]
    changed = []
    for path in [*files, *docs]:
        if "egg-info" in path.as_posix() or path.as_posix() == ".ci/privatize.py":
            continue
        text = path.read_text()
        new = rw.python(path, text) if path.suffix == ".py" else rw.markdown(text)
        if new != text:
            changed.append(path.as_posix())
            if not check:
                path.write_text(new)
    print("\n".join(changed))
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
