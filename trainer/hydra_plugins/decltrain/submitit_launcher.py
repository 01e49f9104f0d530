"""Hydra's submitit launchers, with requeued jobs that continue their runs (see trainer/runs/requeue.py).

`configs/hydra/launcher/slurm.yaml` picks `SlurmLauncher`. Hydra's launcher requeues a job with
the arguments it started with, which would train from scratch in the same folder; here it gets
`resume=auto`, so it continues from the folder's `last.ckpt`.
"""
from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher import submitit_launcher


class _ContinuesItsRun:
    """Requeued, a job runs again with its own overrides plus `resume=auto`."""

    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        overrides = [o for o in sweep_overrides if not o.lstrip("+").startswith("resume=")]
        return super().checkpoint([*overrides, "resume=auto"], *args, **kwargs)  # type: ignore[misc]


class SlurmLauncher(_ContinuesItsRun, submitit_launcher.SlurmLauncher):
    """Hydra's submitit SLURM launcher whose requeued jobs continue their runs."""


class LocalLauncher(_ContinuesItsRun, submitit_launcher.LocalLauncher):
    """The same through submitit's local executor: jobs on this machine, signalled and requeued alike."""
