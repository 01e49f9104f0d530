"""The shape of the code docs/architecture.md promises, checked on the source.

Dependencies run one way. Each package may import only the packages `ALLOWED` lists for it
(any import, also inside functions and under `TYPE_CHECKING`): models and datasets know nothing
of training, the engine knows no particular callback and nothing of the commands, run folders
or Hydra, and built-in callbacks depend on the engine, never the reverse. Within the packages
no module imports one that imports it back, and no script in scripts/ imports another that
imports it back.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Repository folder -> installed package (pyproject's package-dir); the Hydra plugins install
# apart, as `hydra_plugins.decltrain`.
PACKAGES = {"trainer": "decltrain.trainer", "callbacks": "decltrain.callbacks", "models": "decltrain.models",
            "datasets": "decltrain.datasets"}

# The layers, as the module-name prefixes that make them up, most specific first.
LAYERS = {
    "errors": "decltrain.trainer.errors",      # the one user-facing exception type: imports nothing of ours
    "console": "decltrain.trainer.console",    # the terminal (Rich): imports nothing of ours
    "engine": "decltrain.trainer.engine",
    "tasks": "decltrain.trainer.tasks",        # the built-in tasks: code against the engine's task contract
    "tracking": "decltrain.trainer.tracking",
    "runs": "decltrain.trainer.runs",
    "commands": "decltrain.trainer.commands",
    "callbacks": "decltrain.callbacks",
    "models": "decltrain.models",
    "datasets": "decltrain.datasets",
}
# Which layers each layer may import (itself always). The data contract (datasets.base's
# DataSplits, the in-memory datasets) is what the engine knows of data; the logger interface
# is what it knows of tracking.
ALLOWED = {
    "errors": set(),
    "console": set(),
    "models": {"errors"},
    "datasets": {"errors", "console"},
    "engine": {"errors", "console", "datasets", "tracking"},
    "tasks": {"errors", "engine"},
    "tracking": {"errors", "runs"},
    "runs": {"errors", "engine", "tracking"},
    "callbacks": {"errors", "console", "engine", "runs", "models", "datasets"},
    "commands": set(LAYERS),
}
# What the engine may not know even indirectly through a library: the config system.
ENGINE_NEVER = ("hydra", "omegaconf")


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
    """The modules `path` imports anywhere in the file (also inside functions and TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def layer(module: str) -> str | None:
    return next((name for name, prefix in LAYERS.items() if module == prefix or module.startswith(prefix + ".")),
                None)


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
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


def wrong_directions(found: dict[str, Path]) -> list[str]:
    """Every import from one layer into a layer it may not use, as 'module -> module'."""
    wrong = []
    for name, path in found.items():
        own = layer(name)
        if own is None:  # the package roots (decltrain.trainer) hold no code
            continue
        for other in imports(path, set(found)):
            target = layer(other)
            if target is not None and target != own and target not in ALLOWED[own]:
                wrong.append(f"{name} ({own}) -> {other} ({target})")
            if own == "engine" and other.split(".")[0] in ENGINE_NEVER:
                wrong.append(f"{name} (engine) -> {other}")
    return sorted(wrong)


def test_every_module_belongs_to_a_layer():
    unplaced = [name for name, path in modules().items() if layer(name) is None and path.read_text().strip()
                and path.name != "__init__.py"]
    assert not unplaced, f"modules outside every layer of LAYERS: {unplaced}"


def test_dependencies_run_one_way():
    wrong = wrong_directions(modules())
    assert not wrong, "imports against the layers' direction:\n" + "\n".join(wrong)


def test_an_engine_module_importing_a_callback_is_caught(tmp_path):
    """The check itself can fail: the engine reaching into callbacks/ (as it once did for the time budget)."""
    found = modules()
    leaky = tmp_path / "loop.py"
    leaky.write_text(found["decltrain.trainer.engine.loop"].read_text()
                     + "\nfrom decltrain.callbacks.early_stopping import EarlyStopping\n")
    found["decltrain.trainer.engine.loop"] = leaky
    assert wrong_directions(found) == [
        "decltrain.trainer.engine.loop (engine) -> decltrain.callbacks.early_stopping (callbacks)"]


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph(modules())
    cycles = [" -> ".join(cycle) for name in sorted(graph) if (cycle := cycle_from(name, graph))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("script", sorted(path.stem for path in (REPO / "scripts").glob("*.py")))
def test_no_script_imports_one_that_imports_it_back(script):
    """Scripts import each other by file name (scripts/ is on their path): those imports must not cycle."""
    found = {path.stem: path for path in (REPO / "scripts").glob("*.py")}
    graph = {name: {other.split(".")[0] for other in imports(path, set(found))} & set(found) - {name}
             for name, path in found.items()}
    assert cycle_from(script, graph) is None
