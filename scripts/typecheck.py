"""Runs mypy on the package (settings: `[tool.mypy]` in pyproject.toml); tests/test_types.py runs it too.

    python scripts/typecheck.py                 # the whole package, the scripts and the typing checks
    python scripts/typecheck.py callbacks/ema.py  # extra arguments go to mypy instead of the default targets

Why not plain `mypy trainer callbacks ...`: the repository's folders install under the import
package `decltrain` (pyproject's `package-dir`), and an editable install finds them with an import
hook that mypy cannot follow. So mypy would name `trainer/engine/loop.py` `trainer.engine.loop`
while the code imports `decltrain.trainer.engine.loop`, and see two unrelated modules. This script
lays out the installed names as symbolic links (`.mypy_cache/src/decltrain/trainer` -> `trainer/`,
...) and points mypy there, so every file has its one installed name. The links sit at a fixed
place, so mypy's cache stays valid between runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINKS = ROOT / ".mypy_cache" / "src"
# pyproject's package-dir, minus configs/ (YAML only). trainer/hydra_plugins/decltrain installs as
# `hydra_plugins.decltrain`: linked there alone, so no file has two module names.
PACKAGES = {"decltrain/trainer": "trainer", "decltrain/callbacks": "callbacks", "decltrain/models": "models",
            "decltrain/datasets": "datasets", "decltrain/configs": "configs",
            "hydra_plugins/decltrain": "trainer/hydra_plugins/decltrain"}
SKIPPED = {"trainer/hydra_plugins"}  # inside decltrain/trainer: the plugins have their own name above
# Files mypy checks by path: the scripts, and the typing checks of tests/ (the Trainer against
# the callbacks' TrainerView).
FILES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "scripts").glob("*.py")) + ["tests/typing_checks.py"]


def link_packages() -> None:
    """The installed layout as links to the repository's folders, file by file at the top level.

    Each package is a real folder of links to its entries (not one link to the folder), so that an
    entry (trainer/hydra_plugins) can be left out.
    """
    for name, folder in PACKAGES.items():
        target = LINKS / name
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            link = target / entry.name
            relative = str(entry.relative_to(ROOT))
            if relative in SKIPPED or entry.name == "__pycache__" or link.is_symlink():
                continue
            link.symlink_to(entry)
        for link in target.iterdir():  # entries renamed or removed since the last run
            if link.is_symlink() and not link.exists():
                link.unlink()


def main(argv: list[str]) -> int:
    link_packages()
    targets = argv or [str(LINKS / name) for name in PACKAGES] + FILES
    # Module names come from the search path: `decltrain.*` from the links, the scripts (which
    # import each other by file name) from scripts/, `tests.typing_checks` from the repository root.
    environment = {**os.environ, "MYPYPATH": os.pathsep.join([str(LINKS), str(ROOT / "scripts")])}
    result = subprocess.run([sys.executable, "-m", "mypy", "--explicit-package-bases", *targets], cwd=ROOT,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(repository_paths(result.stdout), end="")
    return result.returncode


def repository_paths(report: str) -> str:
    """mypy's report with the links' paths as the repository's (`trainer/engine/loop.py:12: error ...`)."""
    links = LINKS.relative_to(ROOT)
    for name, folder in sorted(PACKAGES.items(), key=lambda item: -len(item[0])):
        report = report.replace(f"{links / name}/", f"{folder}/")
    return report

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
