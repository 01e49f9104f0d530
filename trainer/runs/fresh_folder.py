"""A fresh run gets a folder of its own, and never writes into another run's checkpoints.

Two runs of one experiment started in the same second (a SLURM array, two shells) would share
`outputs/<experiment>/<second>/`: `claimed` creates the folder with `mkdir`, which only one
process can win, and the next process takes `<second>_1`, `_2`, ... A folder the user names
(`hydra.run.dir=runs/a`) that already holds checkpoints is refused by `check_command_line`
unless `resume=` says to continue it. No torch import: both run before Hydra composes the config.
"""
from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import NoReturn

from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout

CANNOT_CREATE_EXIT_CODE = 2  # as for every other user error (trainer/commands/console_script.py)


@cache  # Hydra may resolve hydra.run.dir more than once: one process, one folder
def claimed(fresh: str) -> str:
    """`fresh`, or `fresh_N` for the first N whose folder this call could create."""
    for number in range(10_000):
        candidate = fresh if number == 0 else f"{fresh}_{number}"
        try:
            Path(candidate).parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(candidate)
        except FileExistsError:
            if Path(candidate).is_dir():
                continue
            _refuse(candidate)
        except OSError as err:
            _refuse(candidate, err)
        return candidate
    return fresh


def _refuse(folder: str, error: OSError | None = None) -> NoReturn:
    """Ends the start with one line: Hydra resolves hydra.run.dir (and so calls `claimed`) before the
    job, where an exception would reach the user as a traceback."""
    blocking = next((ancestor for ancestor in Path(folder).parents if ancestor.is_file()), None)
    cause = f"{blocking} is a file, not a folder" if blocking else (error.strerror if error else "it exists")
    print(f"error: cannot create run folder {folder}: {cause}; choose another hydra.run.dir", file=sys.stderr)
    sys.exit(CANNOT_CREATE_EXIT_CODE)


def check_command_line(argv: list[str]) -> None:
    """Refuses, before Hydra writes anything, a run folder under a regular file, or a fresh run into a
    folder that holds checkpoints."""
    given = {arg.split("=", 1)[0].lstrip("+"): arg.split("=", 1)[1].strip("'\"")
             for arg in argv if "=" in arg and not arg.startswith("-")}
    multirun = "-m" in argv or "--multirun" in argv
    folder_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        if key in given:
            _check_writable(Path(given[key]), key)
    if multirun or folder_key not in given or given.get("resume") not in (None, "null"):
        return
    checkpoints = sorted(layout.checkpoints(Path(given[folder_key])).glob("*.ckpt"))
    if checkpoints:
        raise UserError(f"hydra.run.dir={given[folder_key]} holds the checkpoints of another run ({checkpoints[0]}); "
                        "continue that run with resume=auto (or resume=<its folder>), or give this run another "
                        "hydra.run.dir")


def _check_writable(folder: Path, key: str) -> None:
    """A folder whose nearest existing ancestor is a regular file cannot be created."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"{key}={folder}: {ancestor} is a file, not a folder; choose another {key}")
            return
