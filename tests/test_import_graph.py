"""The import graph of capkern has no cycle (runtime, type-checking-only and lazy imports
alike), checked on the AST of every module so a new circle fails here by name."""

from __future__ import annotations

import ast
from pathlib import Path

import capkern

PKG = Path(capkern.__file__).parent
MODULES = {
    ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
    for p in PKG.rglob("*.py")
}


def _target(name: str) -> str | None:
    """The capkern module an import names (a package's submodule, or the package)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(module: str) -> set[str]:
    """Every capkern module ``module`` imports, wherever the import statement sits."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # ``from pkg import sub`` names a submodule; ``from mod import obj`` the module
            names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod
                     for a in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("capkern.") and " " not in node.value):
            names = [node.value]  # importlib by name
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                out.add(target)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in sorted(graph):
        if root in state:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def package_internal_graph() -> dict[str, set[str]]:
    """Edges between modules, leaving out a package ``__init__`` re-exporting its own
    submodules and modules of a package importing that package's ``__init__``."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        graph[module] = {t for t in edges(module)
                         if not module.startswith(t + ".")}  # a submodule -> its package
    return graph


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_edges_see_type_checking_and_lazy_imports() -> None:
    # kernel.py names the VM only for type checking and sysdump only inside dump():
    # both are edges all the same
    assert {"capkern.mmu._vm", "capkern._sysdump", "capkern._domain"} <= edges("capkern.kernel")


def test_the_import_graph_is_acyclic() -> None:
    cycle = find_cycle(package_internal_graph())
    assert cycle is None, " -> ".join(cycle or [])
