"""The suite's own layout: test modules share code through tests/helpers/, never through one another.

A test module importing another runs (or skips, or breaks) with it, and pytest may collect the
imported module's tests twice; conftest.py is pytest's to load, for fixtures only.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def borrowed(path: Path) -> list[str]:
    """The other test modules (and conftest) `path` imports, or names in a string as a Hydra `_target_`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = f"tests.{node.module or ''}".rstrip(".") if node.level else node.module or ""
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(re.findall(r"_target_=(tests(?:\.\w+)+)", node.value))
    return sorted(name for name in found if re.match(r"tests\.(test_\w+|conftest)\b", name)
                  and name.split(".")[1] != path.stem)


def test_no_test_module_imports_another():
    offending = {str(path.relative_to(TESTS.parent)): borrowed(path)
                 for path in [*TESTS.glob("test_*.py"), TESTS / "conftest.py", *TESTS.glob("helpers/*.py")]}
    offending = {path: names for path, names in offending.items() if names}
    assert not offending, f"move what these use into a module of tests/helpers/ and import it from there: {offending}"


# A Hydra target names its module in a string: this module's own strings spell the package `<tests>`,
# so that they borrow nothing themselves.
EXAMPLE = """from tests.test_cuda import OverflowAt
from tests.conftest import make_trainer
from . import test_resume
from tests.helpers.trainers import TinyNet
STOP = "+callbacks.stop._target_=<tests>.test_resume.SignalAtStep"
OWN = "+callbacks.own._target_=<tests>.test_example.Own"
"""


def test_an_import_from_another_test_module_is_caught(tmp_path):
    module = tmp_path / "test_example.py"
    module.write_text(EXAMPLE.replace("<tests>", "tests"))
    assert borrowed(module) == ["tests.conftest", "tests.conftest.make_trainer", "tests.test_cuda",
                                "tests.test_cuda.OverflowAt", "tests.test_resume", "tests.test_resume.SignalAtStep"]
