"""The `train` console script: Hydra composes the config, `trainer.run` does the work.

This module imports no torch, so `train --help` and `train --cfg job` answer quickly.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from trainer import resume, schema

schema.register()
OmegaConf.register_new_resolver("run_folder", resume.run_folder, replace=True)
log = logging.getLogger("trainer")

USER_ERROR_EXIT_CODE = 2
# Stopped by a signal after writing a checkpoint: the shell's convention, 128 + signal number
# (SIGTERM: 143, SIGINT: 130). A second Ctrl-C aborts without a checkpoint, also with 130.
SIGNAL_EXIT_BASE = 128
ABORTED_EXIT_CODE = 130


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def train(cfg: DictConfig) -> float | None:
    """Runs one job; returns the monitored validation metric so Hydra sweepers can optimise it."""
    from trainer.errors import Preempted, UserError
    from trainer.run import run

    try:
        return run(cfg)
    except UserError as err:
        log.error("%s", err)
        sys.exit(USER_ERROR_EXIT_CODE)
    except Preempted as stop:
        sys.exit(SIGNAL_EXIT_BASE + stop.signum)
    except KeyboardInterrupt:
        log.error("aborted by a second Ctrl-C; the last checkpoint written before it is intact")
        sys.exit(ABORTED_EXIT_CODE)
