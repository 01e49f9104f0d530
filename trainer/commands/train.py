"""The `train` console script: Hydra composes the config, `commands.train_job` does the work.

This module imports no torch, so `train --help` and `train --cfg job` answer quickly.
With several devices the process Hydra started only launches the workers (trainer/commands/launch.py);
each worker comes back through this same entry point under torch elastic.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer.commands import console_script, launch
from decltrain.trainer.commands.console_script import USER_ERROR_EXIT_CODE
from decltrain.trainer.commands.unknown_keys import explained_composition_errors
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import fresh_folder, from_folder, requeue

log = logging.getLogger("decltrain")

# Stopped by a signal after writing a checkpoint: the shell's convention, 128 + signal number
# (SIGTERM: 143, SIGINT: 130). A second Ctrl-C aborts without a checkpoint, also with 130.
SIGNAL_EXIT_BASE = 128
ABORTED_EXIT_CODE = 130
WRITE_FAILED_EXIT_CODE = 1  # a file of the run folder could not be written (full disk, permissions)


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
        with console_script.frozen_imports():
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
    except OSError as err:
        written = _in_run_folder(err.filename)
        if written is None:
            raise
        log.error("cannot write %s: %s; free disk space or choose a writable hydra.run.dir", written,
                  err.strerror or err)
        _fail(err, WRITE_FAILED_EXIT_CODE)
    except Exception:
        if _in_sweep():  # alone, Hydra prints the traceback; in a sweep, the job's log keeps it
            log.exception("the job failed")
        raise


def _fail(error: Exception, exit_code: int) -> NoReturn:
    """Ends a failed job: the process alone, the job only (by raising) in a sweep."""
    if _in_sweep():
        raise error
    sys.exit(exit_code)


def _in_run_folder(filename: object) -> Path | None:
    """The file an OSError names, when it lies in this job's run folder (a failed write of the run)."""
    if not isinstance(filename, (str, os.PathLike)):
        return None
    path = Path(filename)
    folder = Path(HydraConfig.get().runtime.output_dir).resolve()
    return path if path.resolve().is_relative_to(folder) else None


def _in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def train() -> None:
    """The console script (also `python -m decltrain.trainer.commands.train`, which is how launched workers start)."""
    console_script.sleeping_openmp_threads()  # first: nothing may import torch before it
    console_script.importable_working_directory()
    console_script.register_train_config()
    try:
        sys.argv[1:] = from_folder.expanded(sys.argv[1:])
        fresh_folder.check_command_line(sys.argv[1:])
    except UserError as err:  # before Hydra: its logging is not set up yet
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    clean_up = launch.isolate_nonzero_rank(sys.argv)
    try:
        with explained_composition_errors("train", "train"):
            _main()
    finally:
        clean_up()


if __name__ == "__main__":
    train()
