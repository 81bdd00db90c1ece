"""The import graph of `buy_x402/` and `devstack/`: no cycles, and commands do not import commands.

Every `import` counts, at module level or inside a function, because a function-level import that
closes a circle is still a circle (it only fails later, or runs a module twice).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("buy_x402", "devstack")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, relative imports resolved; `from X import y` counts as
    an import of X.y when that is a module, else of X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_at_all():
    edges = graph()
    assert "buy_x402.adoption" in edges["buy_x402.commands.default"]
    assert "devstack.stack" in edges["devstack.demo"]
    assert "buy_x402.schemes.permit2" in edges["buy_x402.schemes"]  # `from . import permit2`


def test_no_import_cycles():
    assert cycles(graph()) == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_commands_do_not_import_commands():
    edges = graph()
    verbs = {name for name in edges if name.startswith("buy_x402.commands.")}
    assert {(verb, other) for verb in verbs for other in edges[verb] & verbs} == set()


def test_only_the_agent_package_names_hermes():
    """The runtime seam holds: outside `buy_x402/agent/`, no module imports or names the Hermes runtime."""
    leaks = [str(p.relative_to(REPO)) for p in (REPO / "buy_x402").rglob("*.py")
             if "agent" not in p.relative_to(REPO / "buy_x402").parts[:1]
             and any(word in p.read_text() for word in ("HermesRuntime", "agent.hermes", "hermes_home",
                                                        "hermes_bin", "hermes_config"))]
    assert leaks == []
