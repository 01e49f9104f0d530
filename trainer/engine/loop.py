"""The Trainer: the epoch loop, the step loop and their events, read top to bottom.

How a step is computed (precision, accumulation, the non-finite policy, DDP's no_sync) is the
step object's (trainer/engine/step.py); scoring a model is trainer/engine/evaluation.py; where
the model runs, trainer/engine/placement.py; the checkpoint's content, trainer/engine/state.py.

Invariants worth knowing when reading the loop:
- `global_step` counts optimizer steps (not batches); schedulers, `max_steps`, logging and
  `every_n_train_steps` all speak of optimizer steps.
- `position` (a `Position`: epoch, batch, step) is the one value a checkpoint keeps of the loop's
  progress. It moves at optimizer-step boundaries only (a checkpoint never holds half an
  accumulation group), and to the next epoch only after all of an epoch's batches trained and
  its end (validation, the per-epoch scheduler) ran. A stop inside an epoch (`max_steps`, a
  callback's `should_stop`) leaves it inside that epoch: the epoch's end does not run, and a
  resumed run finishes it.
- `batch_idx` is the number of batches of the current epoch already consumed (micro-batches too).
- The training loss reaches Python (`.item()`, a host sync) only on logging steps.
- SIGTERM/SIGINT/USR2 only set a flag; the loop acts on it at the next optimizer-step boundary, so
  the checkpoint written on the way out is a state the uninterrupted run also passed through.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decltrain.callbacks.base import Callback
from decltrain.callbacks.timer import Timer
from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine import data, distributed, evaluation, events
from decltrain.trainer.engine.device import configure_determinism, explain_nondeterministic
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.position import Position
from decltrain.trainer.engine.profiler import build_profiler
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.state import CheckpointState
from decltrain.trainer.engine.step import TrainStep
from decltrain.trainer.engine.stop_signals import StopSignals
from decltrain.trainer.engine.task import Task
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger

log = logging.getLogger("decltrain")


class Trainer(CheckpointState):
    """A Trainer complete after construction: placed model, loaders, step, callbacks, loggers.

    Without an `optimizer` it only evaluates (`evaluate`, `test`). The start is a checkpoint's
    full state when resuming (`resume`, read from `resume_source`), else the `init_from` weights
    (fine-tuning), else the model as built: a resumed run never reads `init_from` again.
    `config_yaml`, the resolved config, goes into every checkpoint. `placement` (made from the
    settings unless given) lets a command refuse what this machine cannot run before building.
    """

    def __init__(self, settings: TrainerSettings, model: nn.Module, splits: DataSplits, task: Task, *,
                 optimizer: torch.optim.Optimizer | None = None, lr_schedule: LRSchedule | None = None,
                 callbacks: dict[str, Callback] | None = None, loggers: list[Logger] | None = None,
                 run_dir: str | Path = ".", config_yaml: str = "", resume: dict[str, Any] | None = None,
                 resume_source: str = "", placement: Placement | None = None) -> None:
        self.settings = settings
        torch.autograd.set_detect_anomaly(settings.detect_anomaly)
        placement = self.placement = placement or Placement(settings)
        self.device, self.world_size = placement.device, placement.world_size
        self.precision = placement.precision
        configure_determinism(settings.deterministic, settings.cudnn_benchmark)
        self.fast_dev_run = settings.fast_dev_run
        self.max_epochs, self.max_steps = settings.epochs, settings.max_steps
        self.log_every_n_steps = settings.logging_interval
        self.callbacks = dict(callbacks or {})
        if settings.max_time is not None:
            self.callbacks.setdefault("timer", Timer(settings.max_time))
        self.run_dir = Path(run_dir)
        self.profiler = build_profiler(settings.profiler, self.run_dir, settings.profiler_schedule)
        self._handlers = events.handlers(self.callbacks, self.profiler)
        self.loggers = list(loggers or [])
        self.is_global_zero = distributed.is_global_zero()
        self.config_yaml = config_yaml

        placed = placement.wrap(model)
        self.model, self._eval_model = placed.train, placed.eval
        self._optimizer, self.task, self.splits = optimizer, task, splits
        self.lr_schedule = lr_schedule or (LRSchedule(optimizer, None) if optimizer else None)
        self.train_loader, self.val_loader, self.test_loader = data.split_loaders(
            splits, settings.seed, self.device, settings.overfit_batches, self.world_size, distributed.rank())
        self.num_train_batches = data.num_batches(self.train_loader, settings.limits["train"])
        if self.num_train_batches == 0:
            raise UserError("the training set gives no batch: lower dataset.batch_size or "
                            "raise trainer.limit_train_batches")
        self.step = None if optimizer is None else TrainStep(
            placed, optimizer, task, self.precision, self.profiler, accumulate=settings.accumulate_grad_batches,
            num_batches=self.num_train_batches, nonfinite_loss=settings.nonfinite_loss, device=self.device)
        self.profiler.setup(self.device)
        events.check_monitors(self.callbacks, self.lr_schedule, task.metric_names("val"))

        self.position = Position()
        self.epoch = 0  # the epoch being trained (0-based); during its end events, the one that ended
        self.batch_idx = 0
        self.global_step = 0
        self.should_stop = False
        self.should_log = False
        self.last_loss = float("nan")
        self.callback_metrics: dict[str, float] = {}
        self.validating_mid_epoch = False  # True while a `val_check_interval` validation runs
        self._logged_step = -1
        self._logged: dict[str, float] = {}
        self._stop = StopSignals(self.world_size, self.device)
        self._start(resume, resume_source)

    # ------------------------------------------------------------------------------------- fit
    def fit(self) -> None:
        """Trains until `max_epochs`, `max_steps`, a callback's `should_stop`, or a stop signal."""
        self._call("on_fit_start")
        try:
            with self._stop.installed(), self.profiler.profiling():
                while self.position.epoch < self.max_epochs and not self._step_limit_reached() and not self.should_stop:
                    if not self._train_epoch():
                        break  # stopped inside the epoch: it is not finished, so its end does not run
                    self._end_epoch()
        except BaseException as error:
            self._call("on_exception", error)
            explained = explain_nondeterministic(error)
            if explained:
                raise explained from error
            raise
        finally:
            for logger in self.loggers:
                logger.flush()
        self._call("on_fit_end")
        if self.is_global_zero:
            self.profiler.report()

    def _train_epoch(self) -> bool:
        """Trains the rest of the current epoch; True when all its batches were trained."""
        step, _, schedule = self._training()
        self.model.train()
        self.epoch, self.batch_idx = self.position.epoch, self.position.batch
        self.train_loader.start_epoch(self.epoch, self.batch_idx)  # resumed mid-epoch: never load them
        self._call("on_train_epoch_start")
        for batch in self.profiler.iterate("data", self.train_loader):
            if self.batch_idx >= self.num_train_batches:
                break
            if step.starts_group(self.batch_idx):
                self._call("on_train_batch_start")
            inputs, targets = self.placement.inputs(batch)
            ends_group = step.forward_backward(inputs, targets, self.batch_idx, self.global_step + 1)
            self.batch_idx += 1
            if not ends_group:
                continue
            loss = step.end_group()
            if loss is None:
                self._skip_step()
            else:
                self._optimizer_step(step, schedule, loss)
            if self.settings.val_check_interval and self.global_step % self.settings.val_check_interval == 0 \
                    and self.batch_idx < self.num_train_batches and not self._step_limit_reached():
                self._validate_mid_epoch()  # before a stop request: its checkpoint follows this validation
            self._raise_if_stop_requested()
            if self.should_stop or self._step_limit_reached():
                break
        return self.batch_idx >= self.num_train_batches

    def _optimizer_step(self, step: TrainStep, schedule: LRSchedule, loss: torch.Tensor) -> None:
        self.should_log = (self.global_step + 1) % self.log_every_n_steps == 0
        step.unscale()
        self._call("on_before_optimizer_step")
        step.apply()
        self.profiler.step()
        self.global_step += 1
        self.position = Position(self.epoch, self.batch_idx, self.global_step)  # before on_train_batch_end may save
        schedule.after_optimizer_step(self.global_step)
        if self.should_log:
            self.last_loss = loss.item()  # the only host sync of a training step
            step.raise_if_nonfinite()
            self.log_metrics({"train/loss": self.last_loss, "epoch": self.epoch,
                              **self.precision.report(self.global_step)})
        self._call("on_train_batch_end")

    def _skip_step(self) -> None:
        """`nonfinite_loss=skip`: this group's gradients are dropped; the step does not count.

        `on_train_batch_end` still closes the `on_train_batch_start` of this group (with
        `global_step` unchanged); `on_before_optimizer_step` does not run.
        """
        self.position = Position(self.epoch, self.batch_idx, self.global_step)
        self.should_log = False
        log.warning("non-finite loss at step %d (epoch %d, batch %d): step skipped",
                    self.global_step + 1, self.epoch + 1, self.batch_idx)
        self._call("on_train_batch_end")

    def _end_epoch(self) -> None:
        """Validation, the per-epoch scheduler and the end events of an epoch whose batches all trained."""
        step, _, schedule = self._training()
        metrics = self._validate() if (self.epoch + 1) % self.settings.check_val_every_n_epoch == 0 else {}
        step.raise_if_nonfinite()
        schedule.after_epoch(self.global_step, metrics)
        if metrics:
            self._call("on_validation_end", metrics)
        self.position = Position(self.epoch + 1, 0, self.global_step)  # checkpoints from here start the next epoch
        self._call("on_train_epoch_end")
        self.epoch, self.batch_idx = self.position.epoch, self.position.batch

    def _raise_if_stop_requested(self) -> None:
        self._stop.raise_if_requested(agree_now=self.global_step % self.log_every_n_steps == 0)

    def _step_limit_reached(self) -> bool:
        return 0 <= self.max_steps <= self.global_step

    # ------------------------------------------------------------------------------ evaluation
    def _validate(self) -> dict[str, float]:
        self._call("on_validation_start")
        with self.profiler.section("validation"):
            metrics = self.evaluate(self.val_loader, "val")
        self.callback_metrics = metrics
        self.log_metrics(metrics)
        self.model.train()
        return metrics

    def _validate_mid_epoch(self) -> None:
        """`val_check_interval`: validation after this optimizer step, at a step boundary.

        Checkpoint callbacks, which run last, write their files in `on_validation_end` here: the
        state they save is the one the loop continues from.
        """
        self.validating_mid_epoch = True
        try:
            metrics = self._validate()
            self._training()[0].raise_if_nonfinite()
            self._call("on_validation_end", metrics)
        finally:
            self.validating_mid_epoch = False

    def test(self, ckpt_path: str | Path | None = None) -> dict[str, float]:
        """Tests the model, after loading the weights of `ckpt_path` when given."""
        distributed.barrier()  # under DDP, rank 0 has finished writing the checkpoint every rank reads
        if ckpt_path is not None:
            self.load_weights(ckpt_path)
        metrics = self.evaluate(self.test_loader, "test")
        self.log_metrics(metrics)
        return metrics

    def evaluate(self, loader: data.Loader, split: str) -> dict[str, float]:
        """Metrics of the model over `loader` (reduced over every rank), keyed `split/name`."""
        # A long validation must not delay a preemption (ranks hold unequal shards: no collective
        # in this loop). A mid-epoch one finishes first: its step's checkpoint follows it.
        watch = self.world_size == 1 and not self.validating_mid_epoch
        scalars, images = evaluation.evaluate(
            self._eval_model, loader, self.task, split, placement=self.placement,
            limit=self.settings.limits[split], class_names=self.splits.class_names,
            before_batch=self._raise_if_stop_requested if watch else None)
        for name, image in images.items():
            self.log_image(name, image)
        return scalars

    def _call(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            handler(self, *args)
