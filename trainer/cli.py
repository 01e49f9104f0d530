"""The `train` console script: Hydra composes the config, `trainer.run` does the work.

This module imports no torch, so `train --help` and `train --cfg job` answer quickly.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from trainer import schema

schema.register()
log = logging.getLogger("trainer")

USER_ERROR_EXIT_CODE = 2


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def train(cfg: DictConfig) -> float | None:
    """Runs one job; returns the monitored validation metric so Hydra sweepers can optimise it."""
    from trainer.errors import UserError
    from trainer.run import run

    try:
        return run(cfg)
    except UserError as err:
        log.error("%s", err)
        sys.exit(USER_ERROR_EXIT_CODE)
