"""Where a resumed run continues: its own run folder and its last checkpoint.

Imported by the CLI before Hydra composes the config (the run folder is part of it), so this
module must not import torch.
"""
from __future__ import annotations

from pathlib import Path

LAST = Path("checkpoints") / "last.ckpt"
# `resume=auto`: continue the run folder's own last checkpoint when it has one, else start fresh.
# Meant for a fixed folder (hydra.run.dir=..., a sweep job's folder): the same command run again
# after a crash, a requeue or in a shell loop continues instead of starting over.
AUTO = "auto"


def run_folder(resume: str | None, fresh: str) -> str:
    """The value of `hydra.run.dir`: `fresh` for a new run, else the folder of the run to resume.

    `resume` may be a checkpoint file (inside `<run>/checkpoints/` it continues that run; anywhere
    else it starts a fresh folder), a run folder, `auto` (the folder the run gets anyway), or
    `latest`: the newest run folder (by its timestamped name) beside `fresh` that holds a last
    checkpoint. A resume target that does not
    exist yields `fresh`: `checkpoint_path` then reports it as one clear error (an exception raised
    here would reach the user as a long OmegaConf traceback).
    """
    if resume is None or resume == AUTO:
        return fresh
    if resume == "latest":
        runs = latest_runs(Path(fresh).parent)
        return str(runs[-1]) if runs else fresh
    path = Path(resume)
    if path.is_dir():
        return str(path)
    if path.is_file() and path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return fresh


def latest_runs(experiment_dir: Path) -> list[Path]:
    """Run folders of one experiment that hold a last checkpoint, oldest first."""
    return sorted(folder for folder in experiment_dir.glob("*") if (folder / LAST).is_file())


def checkpoint_path(resume: str, run_dir: Path) -> Path | None:
    """The file to load: the one named, or the last checkpoint of the run folder.

    None for `resume=auto` in a folder without a last checkpoint (a fresh start). Raises
    UserError naming what is missing and how to fix it.
    """
    from decltrain.trainer.errors import UserError

    if resume == AUTO:
        return run_dir / LAST if (run_dir / LAST).is_file() else None
    path = Path(resume)
    if path.is_file():
        return path
    if resume == "latest":
        if not latest_runs(run_dir.parent):
            raise UserError(f"resume=latest found no run with {LAST} under {run_dir.parent}; "
                            "pass resume=<checkpoint file or run folder>")
        return run_dir / LAST
    if path.is_dir():
        if not (path / LAST).is_file():
            raise UserError(f"resume={resume}: the run folder has no {LAST}; pass a checkpoint file instead")
        return path / LAST
    raise UserError(f"resume={resume}: no such checkpoint file or run folder")
