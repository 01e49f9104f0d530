"""The reproducibility record of a run: what ran, from which code, on what.

Written to `<run folder>/reproducibility.json` by rank 0 at every start (a resumed run adds
its own record to the list), so a result can be traced to the exact command, commit, uncommitted
changes, library versions and machine.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from decltrain.trainer.runs import layout

_GIT_TIMEOUT_S = 10


def git_state(folder: Path) -> dict[str, Any] | None:
    """Commit, dirty flag and diff against HEAD of the repository holding `folder`; None outside one."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True,
                              timeout=_GIT_TIMEOUT_S).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        root = git("rev-parse", "--show-toplevel").strip()
        diff = git("diff", "HEAD")
        untracked = git("ls-files", "--others", "--exclude-standard").split()
    except (OSError, subprocess.SubprocessError):
        return None  # no git, not a repository, or a repository without commits
    return {"root": root, "commit": commit, "dirty": bool(diff or untracked), "diff": diff,
            "untracked": untracked}


def source_repository() -> dict[str, Any] | None:
    """The repository the command ran in, else the one this toolkit's code lives in (an editable
    install), else None."""
    return git_state(Path.cwd()) or git_state(Path(__file__).resolve().parent)


def record() -> dict[str, Any]:
    devices = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "cwd": str(Path.cwd()),
        "git": source_repository(),
        "python": sys.version,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": devices or ["cpu"],
        "packages": installed_packages(),
    }


def installed_packages() -> list[str]:
    """`Name==version` of every installed distribution, sorted (what `pip freeze` lists).

    Reads only the header of each METADATA file, where both fields are: `Distribution.metadata`
    parses the whole file, long description included, which cost a quarter second per start.
    """
    packages = []
    for dist in metadata.distributions():
        fields: dict[str, str] = {}
        for line in (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").splitlines():
            if not line:  # the header ends at the first empty line
                break
            key, _, value = line.partition(":")
            fields.setdefault(key, value.strip())
        if fields.get("Name"):
            packages.append(f"{fields['Name']}=={fields.get('Version')}")
    return sorted(packages)


def write(run_dir: Path, rerun_of: str | None = None) -> dict[str, Any]:
    """Adds this start's record to the run folder's file (naming the run it repeats, if any); returns the record."""
    path = run_dir / layout.REPRODUCIBILITY
    records = json.loads(path.read_text()) if path.is_file() else []
    current = {**record(), **({"rerun_of": rerun_of} if rerun_of else {})}
    path.write_text(json.dumps([*records, current], indent=1) + "\n")
    return current
