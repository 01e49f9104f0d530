"""How one optimizer step is computed; the loop (trainer/engine/loop.py) decides when it runs.

The split follows detectron2's `SimpleTrainer`/`AMPTrainer`: the step object owns precision
(autocast, the scaled backward, unscaling, the scaler's step), gradient accumulation (which
micro-batches form a group; the group's mean loss), the non-finite-loss policy and DDP's
`no_sync`. It knows no events, checkpoints or epochs.
"""
from __future__ import annotations

from typing import Any

import torch

from decltrain.trainer.engine import distributed
from decltrain.trainer.engine.placement import Placed
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.profiler import Profiler
from decltrain.trainer.engine.task import Task, total_loss
from decltrain.trainer.errors import NonFiniteLoss


class TrainStep:
    """Micro-batches in (`forward_backward`), one optimizer step per accumulation group out.

    Groups are `accumulate` consecutive batches of an epoch of `num_batches`; the last group of
    an epoch may be smaller and is still stepped. `nonfinite_loss`: "stop" records the first
    step whose loss was NaN/inf on the device (no host sync) for `raise_if_nonfinite`; "skip"
    drops a group any rank saw a non-finite loss in (one host sync and, under DDP, one
    all-reduce per step, so every rank skips the same steps).
    """

    def __init__(self, placed: Placed, optimizer: torch.optim.Optimizer, task: Task, precision: Precision,
                 profiler: Profiler, *, accumulate: int, num_batches: int, nonfinite_loss: str,
                 device: torch.device) -> None:
        self.placed = placed
        self.optimizer = optimizer
        self.task = task
        self.precision = precision
        self.profiler = profiler
        self.accumulate = accumulate
        self.num_batches = num_batches
        self.skip_nonfinite = nonfinite_loss == "skip"
        self.device = device
        # The optimizer step (1-based) whose loss first was NaN/inf; -1 while all were finite.
        self._first_nonfinite = torch.tensor(-1, device=device)
        self._group_is_finite = torch.ones((), dtype=torch.bool, device=device)
        self._group_loss = torch.zeros((), device=device)
        self._group_parts: dict[str, torch.Tensor] = {}
        # The named parts of the last finished group's loss (a task's dict of losses), on the device.
        self.loss_parts: dict[str, torch.Tensor] = {}

    def starts_group(self, batch_idx: int) -> bool:
        return batch_idx % self.accumulate == 0

    def forward_backward(self, batch: Any, batch_idx: int, step: int) -> bool:
        """Forward and backward of batch `batch_idx` of the epoch, part of optimizer step `step`
        (1-based); True when it ends its group, which is then ready for `end_group`."""
        group_start = batch_idx - batch_idx % self.accumulate
        group_size = min(self.accumulate, self.num_batches - group_start)
        last_of_group = batch_idx + 1 - group_start == group_size
        with self.placed.gradient_sync(last_of_group):
            with self.profiler.section("forward"), self.precision.autocast():
                loss, parts = total_loss(self.task.loss(self.placed.train_module, batch))
            finite = torch.isfinite(loss.detach())
            if self.skip_nonfinite:
                self._group_is_finite &= finite
            else:
                self._first_nonfinite = torch.where(~finite & (self._first_nonfinite < 0), step,
                                                    self._first_nonfinite)
            # Each micro-batch carries its share of the group, so the step sees the group's mean loss.
            share = loss / group_size if group_size > 1 else loss
            with self.profiler.section("backward"):
                self.precision.backward(share)
            self._group_loss += share.detach()  # train/loss is the group's mean, as the step saw it
            for name, part in parts.items():
                part = part.detach() / group_size if group_size > 1 else part.detach()
                self._group_parts[name] = self._group_parts[name] + part if name in self._group_parts else part
        return last_of_group

    def end_group(self) -> torch.Tensor | None:
        """The finished group's mean loss (on the device), or None when it is skipped for a
        non-finite loss: its gradients are then dropped and no optimizer step follows."""
        loss, self._group_loss = self._group_loss, torch.zeros((), device=self.device)
        self.loss_parts, self._group_parts = self._group_parts, {}
        usable = not self.skip_nonfinite or distributed.min_over_ranks(int(self._group_is_finite), self.device) == 1
        self._group_is_finite.fill_(True)
        if usable:
            return loss
        self.optimizer.zero_grad(set_to_none=True)
        return None

    def unscale(self) -> None:
        """Makes the gradients true gradients (before `on_before_optimizer_step`: clipping sees real values)."""
        self.precision.unscale(self.optimizer)

    def apply(self) -> None:
        """The optimizer step (the fp16 scaler skips it when gradients overflowed), then fresh gradients."""
        with self.profiler.section("optimizer"):
            self.precision.step(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)

    def raise_if_nonfinite(self) -> None:
        """Stops with the step whose loss went NaN/inf; called before anything is logged or saved."""
        bad_step = int(self._first_nonfinite)
        if bad_step >= 0:
            raise NonFiniteLoss(
                f"the training loss became NaN or infinite at step {bad_step}; training stopped and the "
                "checkpoints written before it are kept. Lower optimizer.lr, set "
                "callbacks.gradient_clipping.value, or use trainer.nonfinite_loss=skip")
