"""The package's module graph: no import cycle, and the leaf modules stay leaves.

An import cycle is how a module per concern decays into one knot (issue 11 found
auth -> errors -> ratelimit -> auth). Imports inside functions count too: a lazy import hides
a cycle from Python at start-up, not from a reader. Imports under `if TYPE_CHECKING:` do not:
they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "admin_service"
# Modules that everything may import and that import no other module of the package than these.
LEAVES = ("admin_service.clock", "admin_service.names", "admin_service.errors", "admin_service.jobs.status")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules this file imports (at any depth), outside TYPE_CHECKING blocks."""
    found: set[str] = set()
    this = module_name(path)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from admin_service.live import hub` is an edge to the submodule hub; a name
                # that is not a submodule is an edge to the module that defines it.
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    # A package's __init__ is imported with any of its modules; do not count that as an edge.
    return {name for name in found if name in modules and name != this}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) for name, path in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := walk(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_only_other_leaves(leaf: str) -> None:
    assert graph()[leaf] <= set(LEAVES), f"{leaf} must stay a leaf"


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check above is only worth something if it can fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
