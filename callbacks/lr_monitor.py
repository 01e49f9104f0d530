"""Logs the learning rate of each parameter group (`train/lr`, or `train/lr/group<i>` for several
groups); a task's several optimizers each under their name (`train/lr_generator`)."""
from __future__ import annotations


from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.optimizers import metric_name


class LearningRateMonitor(Callback):
    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        if trainer.batch_idx == 0:  # a resumed epoch already logged its start
            self._log(trainer)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if trainer.should_log:
            self._log(trainer)

    def _log(self, trainer: TrainerView) -> None:
        rates: dict[str, float] = {}
        for name, optimizer in trainer.optimizers.items():
            metric, groups = metric_name("train/lr", name), optimizer.param_groups
            if len(groups) == 1:
                rates[metric] = groups[0]["lr"]
            else:
                rates.update({f"{metric}/group{i}": group["lr"] for i, group in enumerate(groups)})
        trainer.log_metrics(rates)
