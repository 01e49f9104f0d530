"""The shape of the code docs/architecture.md promises, checked on the source.

No module imports one that imports it back (directly or through others, `TYPE_CHECKING` imports
included), the engine builds a Trainer from plain values (no Hydra, nothing of the commands),
and no module grows past about 300 lines (the loop about 250).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Repository folder -> installed package (pyproject's package-dir); the Hydra plugins install
# apart, as `hydra_plugins.decltrain`.
PACKAGES = {"trainer": "decltrain.trainer", "callbacks": "decltrain.callbacks", "models": "decltrain.models",
            "datasets": "decltrain.datasets"}
MAX_LINES = 300
MAX_LOOP_LINES = 270


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            if "hydra_plugins" in path.parts:
                continue
            parts = [part for part in path.relative_to(REPO / folder).with_suffix("").parts if part != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in the file (also inside functions and TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    found = modules()
    # A package's __init__ runs before its modules: an edge to a parent package is not a cycle.
    return {name: {other for other in imports(path, set(found)) if other in found and other != name
                   and not name.startswith(other + ".")}
            for name, path in found.items()}


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for other in graph[name]:
            if other == start:
                return [*path, start]
            if other not in seen:
                seen.add(other)
                stack.append((other, [*path, other]))
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = [" -> ".join(cycle) for name in sorted(graph) if (cycle := cycle_from(name, graph))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_engine_knows_neither_hydra_nor_the_commands():
    found = modules()
    for name, path in found.items():
        if name.startswith("decltrain.trainer.engine"):
            leaked = {other for other in imports(path, set(found))
                      if other.split(".")[0] in ("hydra", "omegaconf") or other.startswith("decltrain.trainer.commands")}
            assert not leaked, f"{path.relative_to(REPO)} imports {sorted(leaked)}"


def test_modules_stay_short():
    lengths = {path: len(path.read_text().splitlines()) for path in modules().values()}
    too_long = {str(path.relative_to(REPO)): lines for path, lines in lengths.items() if lines > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    assert lengths[REPO / "trainer" / "engine" / "loop.py"] <= MAX_LOOP_LINES
