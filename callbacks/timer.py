"""`trainer.max_time`: stops training when a time budget is spent, as a finished run does.

At the budget the loop finishes the current optimizer step and stops there, as any stop inside
an epoch does (`last.ckpt` at that step; a resumed run finishes the epoch); the run tests the
best checkpoint and exits 0. The
elapsed training time is part of the checkpoint, so a resumed run gets what is left of the
budget (raise `trainer.max_time` to train longer).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine import distributed
from decltrain.trainer.engine.settings import parse_duration

log = logging.getLogger("decltrain")


class Timer(Callback):
    def __init__(self, max_time: str | float) -> None:
        self.budget = parse_duration(max_time)
        self.elapsed_before = 0.0  # training time of the runs this one resumes
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def on_fit_start(self, trainer: TrainerView) -> None:
        self._start = time.monotonic()
        left = self.budget - self.elapsed_before
        earlier = f" ({left:.0f} s left after {self.elapsed_before:.0f} s of earlier runs)" if self.elapsed_before else ""
        log.info("time budget: %.0f s%s", self.budget, earlier)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        spent = self.elapsed() >= self.budget
        if trainer.world_size > 1:  # every rank must stop at the same step: the first clock to run out decides
            spent = bool(distributed.max_over_ranks(int(spent), trainer.device))
        if spent and not trainer.should_stop and trainer.is_global_zero:
            log.warning("time ran out (trainer.max_time=%.0f s) at epoch %d, step %d: writing last.ckpt "
                        "and testing the best checkpoint", self.budget, trainer.epoch + 1, trainer.global_step)
        trainer.should_stop = trainer.should_stop or spent

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed_before = float(state["elapsed"])
