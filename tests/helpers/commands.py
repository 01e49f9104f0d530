"""The installed console scripts, run in a subprocess as a user would."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def train_command(name: str = "train") -> str:
    """An installed console script (`train` unless named), as a user would run it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"the `{name}` console script is not installed; run the README's set-up command"
    return found


def run_train(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600,
              command: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([command or train_command(), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def python_path(*folders: Path) -> str:
    """PYTHONPATH with `folders` first (a test's own callbacks), keeping what the environment had."""
    return os.pathsep.join([*map(str, folders), *filter(None, [os.environ.get("PYTHONPATH")])])


def run_command(name: str, *args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """One of the installed run-folder commands (`evaluate`, `predict`, `export-model`)."""
    return run_train(*args, cwd=cwd, env={"DATA_DIR": str(data_dir)}, command=train_command(name))
