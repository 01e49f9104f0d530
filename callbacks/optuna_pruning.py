"""Reports the monitored metric to the Optuna trial after every validation and stops the run
when the study's pruner says the trial cannot catch up (`hparams_search=...`)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine import distributed
from decltrain.trainer.runs import optuna_trial

if TYPE_CHECKING:
    import optuna  # an optional extra: imported only where a search runs (optuna_trial.current)

log = logging.getLogger("decltrain")
RECORD = "optuna_trial.json"  # in the run folder: the trial, its reported values, whether it was pruned


class OptunaPruning(Callback):
    """Does nothing outside a search. Only rank 0 talks to the study; the ranks share its verdict."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.in_search = optuna_trial.TRIAL_ID in os.environ
        self.trial = optuna_trial.current() if self.in_search and distributed.is_global_zero() else None
        self.reported: dict[int, float] = {}
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if not self.in_search:
            return
        epoch = trainer.epoch + 1  # the step the pruner compares trials at: epochs, whatever the batch size
        prune = False
        if self.trial is not None:
            value = metrics[self.monitor]
            self.trial.report(value, step=epoch)
            self.reported[epoch] = value
            prune = self.trial.should_prune()
            if prune:
                self.pruned_at = epoch
                self.trial.set_user_attr(optuna_trial.PRUNED_AT, epoch)
                log.warning("Optuna trial %d pruned after epoch %d: %s=%.4g cannot catch up with the other "
                            "trials; the run stops here", self.trial.number, epoch, self.monitor, value)
            self._write_record(self.trial, trainer.run_dir, "pruned" if prune else "running")
        if distributed.broadcast_object(prune):
            trainer.should_stop = True

    def on_fit_end(self, trainer: TrainerView) -> None:
        if self.trial is not None and self.pruned_at is None:
            self._write_record(self.trial, trainer.run_dir, "finished")

    def _write_record(self, trial: optuna.Trial, run_dir: Path, state: str) -> None:
        record: dict[str, Any] = {"study": trial.study.study_name, "trial": trial.number,
                                  "state": state, "pruned_at_epoch": self.pruned_at,
                                  "monitor": self.monitor, "reported": self.reported}
        (run_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
