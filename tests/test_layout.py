"""The package's shape: no import cycles between polydub's modules, and layers that only
look down: the commands use the flows, the flows use the tasks, the tasks use the library
(jobs, media, models, the catalog); never the other way round.

Imports inside functions count too: a cycle hidden in a function still means neither module
can be understood, tested or moved without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "polydub"


def module_imports() -> dict[str, set[str]]:
    """polydub module -> the polydub modules it imports anywhere in its code."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("polydub"):
                found |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {resolve(alias.name) for alias in node.names if alias.name.startswith("polydub")}
        # a package importing its own submodules is how packages are made, not a cycle
        graph[name] = {m for m in found if m and m != name and not m.startswith(name + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    """3 commands, 2 flows (orchestration), 1 tasks (one stage each), 0 the library."""
    if module == "polydub.cli" or module.startswith("polydub.cli."):
        return 3
    if module.startswith("polydub.flows"):
        return 2
    if module.startswith("polydub.tasks"):
        return 1
    return 0


def test_layers_only_import_downwards():
    upwards = [f"{module} imports {other}" for module, others in sorted(module_imports().items())
               for other in sorted(others) if layer(other) > layer(module)]
    assert upwards == []


def test_no_import_cycles():
    assert cycles(module_imports()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"polydub.a": {"polydub.b"}, "polydub.b": {"polydub.c"}, "polydub.c": {"polydub.a"}, "polydub.d": set()}
    assert cycles(graph) == [["polydub.a", "polydub.b", "polydub.c"]]
    # imports inside functions are seen: the stage imports the pipeline only when it runs
    assert "polydub.lipsync.pipeline" in module_imports()["polydub.lipsync.stage"]
