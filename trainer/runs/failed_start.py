"""A run that fails before training starts leaves no run folder behind.

Hydra creates the run folder, its `.hydra/` and its log file before the job starts; a job that then
stops on a user error (`train +optimizer.lrr=0.1`: Adam takes no `lrr`) has trained nothing, and its
folder would only crowd `outputs/` and `resume=latest`'s choices. The folder goes only when it holds
nothing but what this start wrote: a resumed run's folder (checkpoints, logs) or a folder the user
chose that holds other files (`hydra.run.dir=.`) stays as it is, and so does a sweep job's folder,
which the sweep's summary names.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout, run_lock


@contextmanager
def removed_on_error(run_dir: Path, owner: bool) -> Iterator[None]:
    """A UserError raised in this block removes `run_dir` (by its `owner`, rank 0) if the start wrote all it holds."""
    try:
        yield
    except UserError:
        if owner:
            _remove_start_records(run_dir)
        raise


def remove_unstarted_sweep(sweep_dir: Path) -> None:
    """Removes a sweep's folder when it holds only the `multirun.yaml` Hydra wrote before any job started
    (a sweep whose overrides do not compose), and the parents it leaves empty below the working directory."""
    if sweep_dir.is_dir():
        _remove_if_only(sweep_dir.resolve(), {"multirun.yaml"})


def _remove_start_records(run_dir: Path) -> None:
    """Removes `run_dir`, and the parents it leaves empty below the working directory."""
    _remove_if_only(run_dir.resolve(), {layout.HYDRA.name, f"{HydraConfig.get().job.name}.log",
                                        layout.REPRODUCIBILITY, layout.INFERENCE, layout.STATUS, run_lock.LOCK})


def _remove_if_only(folder: Path, start_records: set[str]) -> None:
    here = Path.cwd().resolve()
    if here.is_relative_to(folder) or not {entry.name for entry in folder.iterdir()} <= start_records:
        return
    shutil.rmtree(folder)
    for parent in folder.parents:
        if parent == here or not parent.is_relative_to(here) or any(parent.iterdir()):
            return
        parent.rmdir()
