"""Callbacks that stop a run the ways tests need: a signal, an fp16-like overflow."""
from __future__ import annotations

import math
import os
import signal

from decltrain.trainer.engine import checkpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.loop import Trainer


class OverflowAt(Callback):
    """Makes the gradients of optimizer step `step` infinite, as an fp16 overflow does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_fit_start(self, trainer: Trainer) -> None:
        first = next(checkpoint.unwrap(trainer.model).parameters())
        first.register_hook(lambda grad: grad * math.inf if trainer.global_step + 1 == self.step else grad)


class SignalAtStep(Callback):
    """Sends this process a real signal after optimizer step `step`."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
