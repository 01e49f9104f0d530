"""Learning-rate scheduling: optional linear warmup, then any torch scheduler, per epoch or step.

Warmup is counted in optimizer steps and writes the learning rate directly; the wrapped
scheduler only starts stepping once warmup is over, from the base learning rate. Torch's
schedulers are chainable (they scale the current lr), so handing over at exactly the base lr
gives the same curve as if warmup had not been there.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from decltrain.trainer.engine.monitor import require_metric
from decltrain.trainer.errors import UserError


class LRSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any | None,
                 interval: str = "epoch", monitor: str | None = None, warmup_steps: int = 0) -> None:
        if interval not in ("epoch", "step"):
            raise UserError(f"scheduler.interval={interval!r} is not valid; use 'epoch' or 'step'")
        if isinstance(scheduler, ReduceLROnPlateau) and not monitor:
            raise UserError("scheduler ReduceLROnPlateau needs scheduler.monitor (e.g. val/loss)")
        if isinstance(scheduler, ReduceLROnPlateau) and interval == "step":
            raise UserError("scheduler ReduceLROnPlateau steps on a validation metric, which exists only after "
                            "validation: set scheduler.interval=epoch")
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.interval = interval
        self.monitor = monitor
        self.warmup_steps = warmup_steps
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        if warmup_steps > 0:
            self._set_warmup_lr(0)

    def check_monitor(self, available: Collection[str]) -> None:
        """Fails at start when the scheduler watches a metric the task does not produce."""
        if self.monitor and isinstance(self.scheduler, ReduceLROnPlateau):
            require_metric("scheduler.monitor", self.monitor, available)

    def _set_warmup_lr(self, steps_done: int) -> None:
        factor = min(1.0, (steps_done + 1) / self.warmup_steps)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def after_optimizer_step(self, global_step: int) -> None:
        """Called after every optimizer step, with the number of steps done so far."""
        if global_step < self.warmup_steps:
            self._set_warmup_lr(global_step)
        elif self.scheduler is not None and self.interval == "step" and global_step > self.warmup_steps:
            self._step_scheduler(None)

    def after_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        """Called at the end of each epoch with the latest validation metrics (may be empty)."""
        if self.scheduler is None or self.interval != "epoch" or global_step < self.warmup_steps:
            return
        self._step_scheduler(metrics)

    def _step_scheduler(self, metrics: dict[str, float] | None) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if not metrics or self.monitor is None:
                return  # no validation this epoch: nothing to react to (the constructor demands a monitor)
            self.scheduler.step(metrics[self.monitor])
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
