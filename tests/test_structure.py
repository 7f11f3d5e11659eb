"""The shape of the tree: package faces only hand names on, and no import circle inside bench/."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_no_init_defines_a_function_or_class() -> None:
    offenders = []
    for init in sorted(BENCH.rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                offenders.append(f"{init.relative_to(BENCH.parent)}: {node.name}")
    assert not offenders, "an __init__.py only hands names on; move these into a module: " + ", ".join(offenders)


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a circle of imports."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_import_circle_inside_bench() -> None:
    """A circle (a imports b imports a, at import time or lazily) means two modules are one: merge them or cut
    the knot. (The knob registry loads the backend registry by name, which grimp does not see as an import.)"""
    graph = grimp.build_graph("bench", exclude_type_checking_imports=True)  # type names only: no circle at run time
    assert _circles(graph) == []
