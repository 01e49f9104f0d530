"""The `train` console script: Hydra composes the config, `commands.train_job` does the work.

This module imports no torch, so `train --help` and `train --cfg job` answer quickly.
With several devices the process Hydra started only launches the workers (trainer/commands/launch.py);
each worker comes back through this same entry point under torch elastic.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import hydra_plugins.decltrain
from decltrain.trainer.commands import launch, schema
from decltrain.trainer.runs import requeue, resume

# OpenMP threads that finished their share sleep instead of spinning (unless the user chose
# otherwise). OpenMP reads this once, when torch loads, which is later than here: this module
# imports no torch. With spinning threads a CPU run slows several-fold whenever other processes
# share the cores; sleeping costs microseconds per parallel region on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
schema.register()
hydra_plugins.decltrain.register()  # the sweeper and launchers, also from an editable install
OmegaConf.register_new_resolver("run_folder", resume.run_folder, replace=True)
log = logging.getLogger("trainer")

USER_ERROR_EXIT_CODE = 2
# Stopped by a signal after writing a checkpoint: the shell's convention, 128 + signal number
# (SIGTERM: 143, SIGINT: 130). A second Ctrl-C aborts without a checkpoint, also with 130.
SIGNAL_EXIT_BASE = 128
ABORTED_EXIT_CODE = 130


@hydra.main(version_base="1.3", config_path="../../configs", config_name="train")
def _main(cfg: DictConfig) -> float | None:
    """Runs one job; returns the monitored validation metric so Hydra sweepers can optimise it.

    A failed job exits with its code when run alone; in a sweep (`-m`) it raises, so that Hydra
    records the failure in the job's JobReturn and the sweep goes on (hydra_plugins/decltrain/
    sweeper.py). A stop signal ends the process either way, after the checkpoint (under
    submitit: with a requeue).
    """
    from decltrain.trainer.errors import Preempted, UserError, WorkersFailed

    try:
        if launch.should_launch(cfg):
            return launch.launch_workers(cfg)
        from decltrain.trainer.engine import distributed
        from decltrain.trainer.commands.train_job import run

        if launch.under_torchrun() and os.environ["RANK"] != "0":
            log.setLevel(logging.WARNING)  # rank 0 speaks for the job; errors still show from every rank
        try:
            accelerator = cfg.trainer.accelerator
            distributed.init(str(getattr(accelerator, "value", accelerator)), int(cfg.trainer.devices))
            return launch.recorded(run)(cfg)
        finally:
            distributed.destroy()
    except UserError as err:
        log.error("%s", err)
        _fail(err, USER_ERROR_EXIT_CODE)
    except WorkersFailed as err:
        log.error("%s", err)
        _fail(err, err.exit_code)
    except Preempted as stop:
        requeue.hand_over(stop.signum)  # under submitit: requeued, this process ends here
        sys.exit(SIGNAL_EXIT_BASE + stop.signum)
    except KeyboardInterrupt:
        log.error("aborted by a second Ctrl-C; the last checkpoint written before it is intact")
        sys.exit(ABORTED_EXIT_CODE)
    except Exception:
        if _in_sweep():  # alone, Hydra prints the traceback; in a sweep, the job's log keeps it
            log.exception("the job failed")
        raise


def _fail(error: Exception, exit_code: int) -> NoReturn:
    """Ends a failed job: the process alone, the job only (by raising) in a sweep."""
    if _in_sweep():
        raise error
    sys.exit(exit_code)


def _in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def importable_working_directory() -> None:
    """Puts the working directory first on `sys.path`, as `python -m` does.

    A console script gets its own folder there instead, so without this `_target_: my_models.Net`
    would not find the user's `my_models.py`. The toolkit's own modules live under `decltrain.`,
    so the user's `models/` or `configs/` folders shadow none of them.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def train() -> None:
    """The console script (also `python -m decltrain.trainer.commands.train`, which is how launched workers start)."""
    importable_working_directory()
    clean_up = launch.isolate_nonzero_rank(sys.argv)
    try:
        _main()
    finally:
        clean_up()


if __name__ == "__main__":
    train()
