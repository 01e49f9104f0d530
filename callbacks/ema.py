"""`callbacks=[default,ema]`: an exponential moving average of the weights, updated every optimizer step.

Validation, the checkpoints' scores, `best.ckpt` and the final test use the average; the raw
weights keep training (see callbacks/weight_averaging.py). With `warmup`, the decay starts low
and rises as min(decay, (1 + n) / (10 + n)) over the first updates, so the early average is not
dominated by the random initial weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from decltrain.trainer.engine.callback import TrainerView
from decltrain.callbacks.weight_averaging import WeightAveraging
from decltrain.trainer.errors import UserError


class EMA(WeightAveraging):
    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise UserError(f"callbacks.ema.decay={decay} must lie between 0 and 1 (e.g. 0.999)")
        super().__init__()
        self.decay = decay
        self.warmup = warmup

    def current_decay(self) -> float:
        """The decay of the next update; `num_averaged` updates are in the average."""
        if self.warmup:
            return min(self.decay, (1 + self.num_averaged) / (10 + self.num_averaged))
        return self.decay

    def multi_avg_fn(self, averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor],
                     num_averaged: torch.Tensor | int) -> None:
        get_ema_multi_avg_fn(self.current_decay())(averaged, current, num_averaged)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        self.update(trainer)
