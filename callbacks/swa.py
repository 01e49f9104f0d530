"""`callbacks=[default,swa]`: stochastic weight averaging over the last epochs.

From epoch `swa_epoch_start` (an epoch number, or a fraction of `trainer.max_epochs`) the
learning rate follows `torch.optim.swa_utils.SWALR` (annealed to `swa_lr` over
`annealing_epochs`, then constant), and the weights at the end of each epoch join an equal
average. The average's BatchNorm statistics are recomputed over the training data
(`update_bn`) before each validation and at the end, so every score is that of the weights
the checkpoint holds. SWALR owns the learning rate from the start epoch on: use it with
`scheduler=none` or a schedule that ends before then.
"""
from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
from torch.optim.swa_utils import SWALR, get_swa_multi_avg_fn, update_bn

from decltrain.trainer.engine.callback import TrainerView
from decltrain.callbacks.weight_averaging import WeightAveraging, has_batchnorm
from decltrain.trainer.engine import data
from decltrain.trainer.errors import UserError


class SWA(WeightAveraging):
    use_buffers = False  # BatchNorm statistics are recomputed for the averaged weights

    def __init__(self, swa_lr: float, swa_epoch_start: int | float = 0.8, annealing_epochs: int = 2,
                 annealing_strategy: Literal["cos", "linear"] = "cos") -> None:
        if annealing_strategy not in ("cos", "linear"):
            raise UserError(f"callbacks.swa.annealing_strategy={annealing_strategy!r} is not valid; "
                            "use 'cos' or 'linear'")
        if swa_epoch_start <= 0:
            raise UserError(f"callbacks.swa.swa_epoch_start={swa_epoch_start} must be an epoch number (1, 2, ...) "
                            "or a fraction of trainer.max_epochs")
        super().__init__()
        self.swa_lr = swa_lr
        self.swa_epoch_start = swa_epoch_start
        self.annealing_epochs = annealing_epochs
        self.annealing_strategy = annealing_strategy
        self.scheduler: SWALR | None = None
        self._scheduler_state: dict[str, Any] | None = None
        self._bn_current = False  # BatchNorm statistics match the average
        self._bn_loader: data.Loader | None = None  # the training split in a fixed order

    multi_avg_fn = staticmethod(get_swa_multi_avg_fn())

    def start_epoch(self, trainer: TrainerView) -> int:
        """The first SWA epoch, 0-based."""
        if isinstance(self.swa_epoch_start, float) and self.swa_epoch_start < 1:
            return max(0, int(self.swa_epoch_start * trainer.max_epochs))
        return int(self.swa_epoch_start) - 1

    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        if trainer.epoch < self.start_epoch(trainer) or self.scheduler is not None:
            return
        learning_rates = [group["lr"] for group in trainer.optimizer.param_groups]
        self.scheduler = SWALR(trainer.optimizer, swa_lr=self.swa_lr, anneal_epochs=self.annealing_epochs,
                               anneal_strategy=self.annealing_strategy)
        if self._scheduler_state is not None:  # resumed: SWALR's constructor already stepped once
            self.scheduler.load_state_dict(self._scheduler_state)
            for group, lr in zip(trainer.optimizer.param_groups, learning_rates):
                group["lr"] = lr

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if self.scheduler is not None and trainer.batch_idx == trainer.num_train_batches:
            self.update(trainer)
            self.scheduler.step()
            self._bn_current = False

    def prepare(self, trainer: TrainerView) -> None:
        module = self.averaged.module
        if self._bn_current or not has_batchnorm(module):
            return
        if self._bn_loader is None:
            self._bn_loader = data.eval_loader(trainer.splits.train, trainer.splits.loader, trainer.device)
        batches = itertools.islice(self._bn_loader, trainer.num_train_batches)
        with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
            update_bn(batches, module, device=trainer.device)
        self._bn_current = True

    def state_dict(self) -> dict[str, Any]:
        # SWALR's own state_dict holds its annealing function, which `weights_only` loading refuses.
        scheduler = None if self.scheduler is None else {
            key: value for key, value in self.scheduler.state_dict().items() if key != "anneal_func"}
        return {**super().state_dict(), "scheduler": scheduler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._scheduler_state = state["scheduler"]
