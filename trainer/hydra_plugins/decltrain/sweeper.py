"""`train -m`'s sweeper: Hydra's basic sweeper, except that a failed job does not end the sweep.

Hydra's `BasicSweeper` raises the first failed job's exception once its batch is back, which
skips every later batch and shows a traceback instead of the results. This one launches every
batch, then prints the summary (trainer/runs/sweep_summary.py) and exits with 1 if any job failed
(0 when all succeeded). Jobs fail by raising (trainer/commands/train.py), so Hydra records each failure
in its `JobReturn`, with any launcher (local, submitit). As when the basic sweeper raises, Hydra's
`on_multirun_end` callbacks do not run after a failed job. A sweep stopped by a signal (Ctrl-C,
SIGTERM: the running job writes its checkpoint and exits) writes the summary of the jobs so far,
the stopped one marked `stopped`, before it exits with 128 + the signal number. No torch import.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException

from decltrain.trainer.runs import failed_start, sweep_summary

FAILED_SWEEP_EXIT_CODE = 1


class Sweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.launcher is not None and self.config is not None
        launch = self.launcher.launch
        returns: list[Sequence[JobReturn]] = []
        running: list[tuple[int, list[str]]] = []  # the batch being launched: (job number, overrides)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))

        def launch_and_keep(batch: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            running[:] = [(initial_job_idx + index, list(overrides)) for index, overrides in enumerate(batch)]
            results = launch(batch, initial_job_idx=initial_job_idx)
            returns.append(results)
            running.clear()
            # The basic sweeper reads each result's `return_value`, which re-raises a failed job's
            # exception: it gets the completed ones only, and the failures stay in `returns`.
            return [result for result in results if result.status == JobStatus.COMPLETED]

        self.launcher.launch = launch_and_keep  # type: ignore[method-assign, assignment]  # bound: no `self`
        try:
            super().sweep(arguments)
        except (SystemExit, KeyboardInterrupt):  # a stop signal ended a job: the summary of the jobs so far
            finished = [sweep_summary.JobRecord.of(job) for batch in returns for job in batch]
            sweep_summary.report([*finished, *sweep_summary.interrupted(sweep_dir, running)], sweep_dir)
            raise
        except HydraException:
            if not returns:  # the overrides did not compose: no job ran, so no sweep folder stays
                failed_start.remove_unstarted_sweep(sweep_dir)
            raise
        finally:
            self.launcher.launch = launch  # type: ignore[method-assign]
        records = [sweep_summary.JobRecord.of(job) for batch in returns for job in batch]
        sweep_summary.report(records, sweep_dir)
        if any(record.status != "done" for record in records):
            sys.exit(FAILED_SWEEP_EXIT_CODE)
        return returns
