"""Logs the learning rate of each parameter group (`train/lr`, or `train/lr/group<i>` for several groups)."""
from __future__ import annotations


from decltrain.trainer.engine.callback import Callback, TrainerView


class LearningRateMonitor(Callback):
    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        if trainer.batch_idx == 0:  # a resumed epoch already logged its start
            self._log(trainer)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if trainer.should_log:
            self._log(trainer)

    def _log(self, trainer: TrainerView) -> None:
        groups = trainer.optimizer.param_groups
        if len(groups) == 1:
            trainer.log_metrics({"train/lr": groups[0]["lr"]})
        else:
            trainer.log_metrics({f"train/lr/group{i}": group["lr"] for i, group in enumerate(groups)})
