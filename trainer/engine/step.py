"""How one optimizer step is computed; the loop (trainer/engine/loop.py) decides when it runs.

The split follows detectron2's `SimpleTrainer`/`AMPTrainer`: the step object owns precision
(autocast, the scaled backward, unscaling, the scaler's step), gradient accumulation (which
micro-batches form a group; the group's mean loss), the non-finite-loss policy and DDP's
`no_sync`. It knows no events, checkpoints or epochs.

A step runs one phase per optimizer that steps in it. With one optimizer (`UNNAMED`), the only
phase's forward and backward run as each micro-batch arrives. A task with several
(`SeveralOptimizers`) names the phases of each step; the group's micro-batches are kept, and each
phase runs the forward and backward of its optimizer's loss over all of them, then steps that
optimizer, so the next phase's loss sees the stepped parameters (a GAN's generator is scored by
the discriminator its step just updated). A phase's backward reaches its own optimizer's
parameters only, so no optimizer steps on gradients of another's loss.
"""
from __future__ import annotations

from typing import Any

import torch

from decltrain.trainer.engine import distributed
from decltrain.trainer.engine.optimizers import UNNAMED, metric_name, trained_parameters
from decltrain.trainer.engine.placement import Placed
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.profiler import Profiler
from decltrain.trainer.engine.task import Loss, SeveralOptimizers, Task, total_loss
from decltrain.trainer.errors import NonFiniteLoss, UserError


class TrainStep:
    """Micro-batches in (`take`), one optimizer step per accumulation group out (`end_phase`,
    `unscale` and `apply` for each of `phases`, then `end_step`).

    Groups are `accumulate` consecutive batches of an epoch of `num_batches`; the last group of
    an epoch may be smaller and is still stepped. `nonfinite_loss`: "stop" records the first
    step whose loss was NaN/inf on the device (no host sync) for `raise_if_nonfinite`; "skip"
    drops a phase any rank saw a non-finite loss in (one host sync and, under DDP, one
    all-reduce per phase, so every rank skips the same steps).
    """

    def __init__(self, placed: Placed, optimizers: dict[str, torch.optim.Optimizer], task: Task,
                 precision: Precision, profiler: Profiler, *, accumulate: int, num_batches: int,
                 nonfinite_loss: str, device: torch.device) -> None:
        several = UNNAMED not in optimizers
        if several and not isinstance(task, SeveralOptimizers):
            raise UserError(f"task {type(task).__name__} steps one optimizer but was given several "
                            f"({', '.join(optimizers)}); give it one, or use a task with optimizer_parameters, "
                            "optimizers_at and optimizer_loss (docs/tasks.md)")
        self.placed = placed
        self.optimizers = optimizers
        self.phased = task if several and isinstance(task, SeveralOptimizers) else None
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
        self._kept: list[Any] = []  # several optimizers: the group's micro-batches, for each phase
        # This step's finished phases: their summed loss, and each one's loss (several optimizers) and
        # named parts by metric name (`train/loss_generator`, `train/loss_<part>`), on the device.
        self._step_loss: torch.Tensor | None = None
        self._step_losses: dict[str, torch.Tensor] = {}

    def starts_group(self, batch_idx: int) -> bool:
        return batch_idx % self.accumulate == 0

    def take(self, batch: Any, batch_idx: int, step: int) -> bool:
        """Batch `batch_idx` of the epoch, part of optimizer step `step` (1-based); True when it ends
        its group, whose phases are then ready to run. One optimizer: its forward and backward run now."""
        group_start = batch_idx - batch_idx % self.accumulate
        group_size = min(self.accumulate, self.num_batches - group_start)
        last_of_group = batch_idx + 1 - group_start == group_size
        if self.phased:
            self._kept.append(batch)
        else:
            self._forward_backward(UNNAMED, batch, step, group_size, last_of_group)
        return last_of_group

    def phases(self, step: int) -> list[str]:
        """The optimizers that step at optimizer step `step`, in order."""
        return self.phased.optimizers_at(step) if self.phased else [UNNAMED]

    def _loss(self, name: str, batch: Any) -> Loss:
        model = self.placed.train_module
        return self.phased.optimizer_loss(model, batch, name) if self.phased else self.task.loss(model, batch)

    def _forward_backward(self, name: str, batch: Any, step: int, group_size: int, last_of_group: bool) -> None:
        with self.placed.gradient_sync(last_of_group):
            with self.profiler.section("forward"), self.precision.autocast():
                loss, parts = total_loss(self._loss(name, batch))
            finite = torch.isfinite(loss.detach())
            if self.skip_nonfinite:
                self._group_is_finite &= finite
            else:
                self._first_nonfinite = torch.where(~finite & (self._first_nonfinite < 0), step,
                                                    self._first_nonfinite)
            # Each micro-batch carries its share of the group, so the step sees the group's mean loss.
            share = loss / group_size if group_size > 1 else loss
            with self.profiler.section("backward"):
                self.precision.backward(share, trained_parameters(self.optimizers[name]) if self.phased else None)
            self._group_loss += share.detach()  # train/loss is the group's mean, as the step saw it
            for part_name, part in parts.items():
                part = part.detach() / group_size if group_size > 1 else part.detach()
                self._group_parts[part_name] = self._group_parts[part_name] + part \
                    if part_name in self._group_parts else part

    def end_phase(self, name: str, step: int) -> torch.Tensor | None:
        """Optimizer `name`'s mean loss over the group (on the device), or None when it is skipped
        for a non-finite loss: its gradients are then dropped and `name` does not step. With
        several optimizers, the phase's forwards and backwards over the kept micro-batches run here."""
        for index, batch in enumerate(self._kept):
            self._forward_backward(name, batch, step, len(self._kept), index + 1 == len(self._kept))
        loss, self._group_loss = self._group_loss, torch.zeros((), device=self.device)
        parts, self._group_parts = self._group_parts, {}
        usable = not self.skip_nonfinite or distributed.min_over_ranks(int(self._group_is_finite), self.device) == 1
        self._group_is_finite.fill_(True)
        if not usable:
            self.optimizers[name].zero_grad(set_to_none=True)
            return None
        self._step_loss = loss if self._step_loss is None else self._step_loss + loss
        metric = metric_name("train/loss", name)
        if self.phased:
            self._step_losses[metric] = loss
        self._step_losses.update({f"{metric}_{part}": value for part, value in parts.items()})
        return loss

    def unscale(self, name: str) -> None:
        """Makes the gradients true gradients (before `on_before_optimizer_step`: clipping sees real values)."""
        self.precision.unscale(self.optimizers[name])

    def apply(self, name: str) -> None:
        """Optimizer `name`'s step (the fp16 scaler skips it when gradients overflowed), then fresh gradients."""
        with self.profiler.section("optimizer"):
            self.precision.step(self.optimizers[name])
            self.optimizers[name].zero_grad(set_to_none=True)

    def end_step(self, stepped: bool) -> None:
        """After the step's phases: the loss scale is updated once (when an optimizer stepped), as
        PyTorch's recipe for several optimizers sharing one GradScaler says; the kept batches go."""
        self._kept = []
        if stepped:
            self.precision.update()

    def pop_losses(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(`train/loss`: the loss, or the sum of the losses of the optimizers that stepped; the other
        loss metrics) of the step that ended, on the device; then cleared for the next step."""
        total, losses = self._step_loss, self._step_losses
        self._step_loss, self._step_losses = None, {}
        if total is None:
            raise RuntimeError("pop_losses called after a step in which no optimizer stepped")
        return total, losses

    def raise_if_nonfinite(self) -> None:
        """Stops with the step whose loss went NaN/inf; called before anything is logged or saved."""
        bad_step = int(self._first_nonfinite)
        if bad_step >= 0:
            raise NonFiniteLoss(
                f"the training loss became NaN or infinite at step {bad_step}; training stopped and the "
                "checkpoints written before it are kept. Lower optimizer.lr, set "
                "callbacks.gradient_clipping.value, or use trainer.nonfinite_loss=skip")
