"""The callback contract: the events, the trainer as callbacks see it, and the order they run in.

Order of events in `Trainer.fit` (the loop itself is trainer/engine/loop.py):

    (resuming: on_load_checkpoint(state), then every state is restored)
    on_fit_start
      for each epoch:
        on_train_epoch_start
          for each batch:
            on_train_batch_start
            forward, loss, backward                   (accumulated over micro-batches)
            on_before_optimizer_step                  (gradients final and unscaled: clip here; a task
                                                       with several optimizers: once before each one's
                                                       step, `trainer.optimizer_name` says which)
            optimizer.step, scheduler (per step)
            on_train_batch_end
            [every val_check_interval steps, mid-epoch:
             on_validation_start, validation, on_validation_end(metrics)   (checkpoints written here)]
        -- only when all the epoch's batches trained (not after a stop inside it) --
        on_validation_start                           (every check_val_every_n_epoch)
        validation
        scheduler (per epoch)
        on_validation_end(metrics)                   (metrics: {"val/loss": ..., "val/acc": ...})
        on_train_epoch_end                            (checkpoints are written here; they resume
                                                       at the next epoch)
    on_fit_end                                        (only when fit finished normally)
    on_exception(error)                               (instead of on_fit_end; then the error rises)

`on_train_batch_start`, `on_before_optimizer_step` and `on_train_batch_end` run once per
optimizer step (after the last micro-batch of a gradient-accumulation group). A step skipped
for a non-finite loss (`trainer.nonfinite_loss=skip`) runs `on_train_batch_start` and
`on_train_batch_end` (with `global_step` unchanged), not `on_before_optimizer_step`.

Checkpoint files: `Trainer.state_dict()` builds the checkpoint dict, then calls
`on_save_checkpoint(state)`, where a callback may edit it (weight averaging puts the averaged
weights under "model" and the raw ones under "training_weights"); `Trainer.fit(ckpt_path=...)`
calls `on_load_checkpoint(state)` before it restores anything. In which order callbacks run on
each event is `call_order`'s rule, below.

What a callback may read of the trainer, set and call is `TrainerView` below: every event gets
the trainer as a `TrainerView`, so a type checker (mypy, tests/test_types.py) holds callbacks to
that contract and the Trainer to providing it (tests/typing_checks.py).

Only the events a callback overrides are called, so an idle callback costs nothing per step.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine.data import Loader
from decltrain.trainer.engine.monitor import Monitor
from decltrain.trainer.engine.profiler import Profiler
from decltrain.trainer.errors import UserError
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.task import Task

EVENTS = (
    "on_fit_start", "on_train_epoch_start", "on_train_batch_start", "on_before_optimizer_step",
    "on_train_batch_end", "on_validation_start", "on_validation_end", "on_train_epoch_end", "on_fit_end",
    "on_exception", "on_save_checkpoint", "on_load_checkpoint",
)


class TrainerView(Protocol):
    """The trainer as callbacks see it: read-only properties, two settable attributes, three methods.

    The engine's Trainer satisfies it structurally (it never names this class), so this module
    never imports the Trainer's: no import cycle, not even one under TYPE_CHECKING.
    """

    @property
    def model(self) -> nn.Module:
        """The training module, possibly wrapped (DDP, torch.compile): `unwrap` it for the plain one."""
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer being stepped (in `on_before_optimizer_step`), else the run's only one."""
    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by name: a task's several (`optimizer.<name>`), or the only one under
        `optimizers.UNNAMED` (trainer/engine/optimizers.py)."""
    @property
    def optimizer_name(self) -> str:
        """The name of `optimizer`; `UNNAMED` for a run's only one."""
    @property
    def epoch(self) -> int:
        """The epoch being trained (0-based); during an epoch's end events, the one that ended."""
    @property
    def global_step(self) -> int:
        """Optimizer steps taken (not batches)."""
    @property
    def batch_idx(self) -> int:
        """Batches of the current epoch consumed so far (micro-batches too)."""
    @property
    def num_train_batches(self) -> int:
        """Batches per training epoch (after `limit_train_batches`)."""
    @property
    def max_epochs(self) -> int: ...
    @property
    def log_every_n_steps(self) -> int:
        """Logging steps are every this many optimizer steps (`last_loss` is set from the first on)."""
    @property
    def run_dir(self) -> Path: ...
    @property
    def is_global_zero(self) -> bool:
        """True in the process that writes files and logs (rank 0)."""
    @property
    def world_size(self) -> int:
        """The number of DDP processes (1 without DDP)."""
    @property
    def device(self) -> torch.device: ...
    @property
    def train_loader(self) -> Loader: ...
    @property
    def splits(self) -> DataSplits:
        """The data: train/val/test datasets, class names, loader settings."""
    @property
    def task(self) -> Task:
        """What is learned (trainer/engine/task.py): the loss, the metrics, the model's inputs in a batch."""
    @property
    def fast_dev_run(self) -> bool: ...
    @property
    def should_log(self) -> bool:
        """This optimizer step's metrics are being logged."""
    @property
    def last_loss(self) -> float:
        """The training loss of the latest logging step (NaN before the first)."""
    @property
    def validating_mid_epoch(self) -> bool:
        """True during a `val_check_interval` validation."""

    should_stop: bool
    """Set True to stop training at the next optimizer-step boundary."""
    callback_metrics: dict[str, float]
    """The latest validation metrics; in `on_fit_end` a callback may add summary values (in a new
    dict: loggers may hold the old one), which join the final metrics table and metrics.json."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Logs scalars at the current `global_step` (rank 0 only; a no-op elsewhere)."""
    def save_checkpoint(self, path: str | Path) -> None:
        """Writes the full state atomically; call it on every rank (a collective): only rank 0 writes the file.
        With `trainer.fsdp.async_save` the file may appear later: see `wait_for_checkpoint`."""
    def wait_for_checkpoint(self) -> None:
        """Returns once the file of the latest `save_checkpoint` exists (before linking or copying it)."""


class Callback:
    """Base class: override the events you need, and `state_dict` if you keep state."""

    writes_checkpoints: bool = False  # True: runs after every other callback on each event (`call_order`)
    # False: needs each rank to hold whole parameters, so a run with trainer.strategy=fsdp refuses it at start
    works_on_shards: bool = True

    def on_fit_start(self, trainer: TrainerView) -> None: ...
    def on_train_epoch_start(self, trainer: TrainerView) -> None: ...
    def on_train_batch_start(self, trainer: TrainerView) -> None: ...
    def on_before_optimizer_step(self, trainer: TrainerView) -> None: ...
    def on_train_batch_end(self, trainer: TrainerView) -> None: ...
    def on_validation_start(self, trainer: TrainerView) -> None: ...
    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None: ...
    def on_train_epoch_end(self, trainer: TrainerView) -> None: ...
    def on_fit_end(self, trainer: TrainerView) -> None: ...
    def on_exception(self, trainer: TrainerView, error: BaseException) -> None: ...
    def on_save_checkpoint(self, trainer: TrainerView, state: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, trainer: TrainerView, state: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback (plain values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def overrides(callback: Callback, event: str) -> bool:
    """True when `callback` does something on `event` (its class overrides the base method)."""
    return getattr(type(callback), event) is not getattr(Callback, event)


def call_order(callbacks: dict[str, Callback]) -> list[tuple[str, Callback]]:
    """The order callbacks run in on every event: config order, checkpoint writers last.

    The one place this rule lives. Writers (`writes_checkpoints = True`) go last so the file they
    write holds every other callback's update of the same event: early stopping's counter after
    this validation, the weight average of this step. (A stable sort: config order otherwise.)
    """
    return sorted(callbacks.items(), key=lambda item: item[1].writes_checkpoints)


def handlers(callbacks: dict[str, Callback], profiler: Profiler) -> dict[str, list[Callable[..., Any]]]:
    """Per event, in `call_order`, only the callbacks that do something on it."""
    return {event: [profiler.wrap(f"{name}.{event}", getattr(callback, event))
                    for name, callback in call_order(callbacks) if overrides(callback, event)] for event in EVENTS}


def check_sharding(callbacks: dict[str, Callback], sharded: bool) -> None:
    """A sharded model (trainer.strategy=fsdp) is refused by callbacks that need whole parameters on each rank."""
    refusing = [name for name, callback in callbacks.items() if sharded and not callback.works_on_shards]
    if refusing:
        raise UserError(f"callbacks.{refusing[0]} needs the whole model on every rank and does not work with "
                        f"trainer.strategy=fsdp; remove it (callbacks.{refusing[0]}=null) or use trainer.strategy=ddp")


def check_monitors(callbacks: dict[str, Callback], lr_schedules: Collection[LRSchedule],
                   available: Collection[str]) -> None:
    """Every monitored name (callbacks, schedulers) is a metric the task produces: checked before training."""
    for monitor in [getattr(callback, "monitor", None) for callback in callbacks.values()]:
        if isinstance(monitor, Monitor):
            monitor.check(available)
    for lr_schedule in lr_schedules:
        lr_schedule.check_monitor(available)
