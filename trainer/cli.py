"""The `train` console script: Hydra composes the config, `trainer.run` does the work.

This module imports no torch, so `train --help` and `train --cfg job` answer quickly.
With several devices the process Hydra started only launches the workers (trainer/launch.py);
each worker comes back through this same entry point under torch elastic.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer import launch, resume, schema

# OpenMP threads that finished their share sleep instead of spinning (unless the user chose
# otherwise). OpenMP reads this once, when torch loads, which is later than here: this module
# imports no torch. With spinning threads a CPU run slows several-fold whenever other processes
# share the cores; sleeping costs microseconds per parallel region on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
schema.register()
OmegaConf.register_new_resolver("run_folder", resume.run_folder, replace=True)
log = logging.getLogger("trainer")

USER_ERROR_EXIT_CODE = 2
# Stopped by a signal after writing a checkpoint: the shell's convention, 128 + signal number
# (SIGTERM: 143, SIGINT: 130). A second Ctrl-C aborts without a checkpoint, also with 130.
SIGNAL_EXIT_BASE = 128
ABORTED_EXIT_CODE = 130


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def _main(cfg: DictConfig) -> float | None:
    """Runs one job; returns the monitored validation metric so Hydra sweepers can optimise it."""
    from decltrain.trainer.errors import Preempted, UserError

    try:
        if launch.should_launch(cfg):
            return launch.launch_workers(cfg)
        from decltrain.trainer import distributed
        from decltrain.trainer.run import run

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
        sys.exit(USER_ERROR_EXIT_CODE)
    except Preempted as stop:
        sys.exit(SIGNAL_EXIT_BASE + stop.signum)
    except KeyboardInterrupt:
        log.error("aborted by a second Ctrl-C; the last checkpoint written before it is intact")
        sys.exit(ABORTED_EXIT_CODE)


def train() -> None:
    """The console script (also `python -m trainer.cli`, which is how launched workers start)."""
    clean_up = launch.isolate_nonzero_rank(sys.argv)
    try:
        _main()
    finally:
        clean_up()


if __name__ == "__main__":
    train()
