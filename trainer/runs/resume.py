"""Which run folder a run writes to: a fresh one, or the folder of the run it resumes.

Registered as the OmegaConf resolver `run_dir` (trainer/commands/console_script.py) and used by `hydra.run.dir`
(configs/hydra/default.yaml), so it runs before Hydra composes the config and must not import torch.
Which checkpoint file `resume=` then loads is `layout.find_checkpoint`'s answer.
"""
from __future__ import annotations

from pathlib import Path

from decltrain.trainer.runs import fresh_folder, layout


def run_dir(resume: str | None, fresh: str) -> str:
    """The value of `hydra.run.dir`: `fresh` for a new run, else the folder of the run to resume.

    `resume` may be a checkpoint file (inside `<run>/checkpoints/` it continues that run; anywhere
    else it starts a fresh folder), a run folder, `auto` (the folder the run gets anyway: meant for
    a fixed folder, hydra.run.dir=... or a sweep job's, so the same command run again after a crash
    or a requeue continues instead of starting over), or `latest`: the newest run folder (by its
    timestamped name) beside `fresh` that holds a last checkpoint. A fresh folder is claimed
    for this process alone (`fresh_folder.claimed`). A resume target that does not
    exist yields `fresh`: `layout.find_checkpoint` then reports it as one clear error (an exception
    raised here would reach the user as a long OmegaConf traceback).
    """
    if resume == layout.LATEST:
        runs = latest_runs(Path(fresh).parent)
        if runs:
            return str(runs[-1])
    elif resume is not None and resume != layout.AUTO:
        path = Path(resume)
        if path.is_dir():
            return str(path)
        if path.is_file() and path.parent.name == layout.CHECKPOINTS:
            return str(path.parent.parent)
    return fresh_folder.claimed(fresh)


def latest_runs(experiment_dir: Path) -> list[Path]:
    """Run folders of one experiment that hold a last checkpoint, oldest first."""
    return sorted(folder for folder in experiment_dir.glob("*") if layout.last(folder).is_file())


def checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint a run resumes from, None for a fresh start (no `resume`, or `auto` with no
    last checkpoint yet); a `resume` that names nothing raises a UserError."""
    if resume is None or (resume == layout.AUTO and not layout.last(run_dir).is_file()):
        return None
    return layout.find_checkpoint(resume, run_dir, "resume")
