"""Stops training when the monitored metric stops improving, or is no longer a finite number."""
from __future__ import annotations

import logging
import math
from typing import Any

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.monitor import Monitor

log = logging.getLogger("decltrain")


class EarlyStopping(Callback):
    def __init__(self, monitor: str = "val/loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0) -> None:
        self.monitor = Monitor("early_stopping", monitor, mode)
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.best: float | None = None
        self.wait = 0

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        value = self.monitor.read(metrics)
        if not math.isfinite(value):
            log.warning("early stopping: %s is %s at epoch %d; stopping", self.monitor.name, value, trainer.epoch + 1)
            trainer.should_stop = True
        elif self.monitor.better(value, self.best, self.min_delta):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                log.info("early stopping: %s did not improve on %.4f for %d validations",
                         self.monitor.name, self.best, self.wait)
                trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]
