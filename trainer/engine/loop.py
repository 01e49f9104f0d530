"""The Trainer: the epoch loop, the step loop and their events, read top to bottom; then its checkpoint state.

How a step is computed (precision, accumulation, the non-finite policy, DDP's no_sync) is the
step object's (trainer/engine/step.py); scoring a model is trainer/engine/evaluation.py; where
the model runs, trainer/engine/placement.py; the checkpoint file format, trainer/engine/checkpoint.py;
the callback contract and the order callbacks run in, trainer/engine/callback.py.

Invariants worth knowing when reading the loop:
- `progress` (trainer/engine/progress.py: epoch, batch, step) is the one record of where the loop
  is; `epoch`, `batch_idx` and `global_step` read it. `step` counts optimizer steps (not
  batches): schedulers, `max_steps`, logging and `every_n_train_steps` all speak of those.
- Events run only at optimizer-step boundaries, so a checkpoint never holds half an accumulation
  group; an epoch counts as done only after all its batches trained and its end (validation,
  the per-epoch scheduler) ran. A stop inside an epoch (`max_steps`, a callback's
  `should_stop`) leaves the record inside that epoch: its end does not run, and a resumed run
  finishes it.
- The training loss reaches Python (`.item()`, a host sync) only on logging steps.
- `max_steps`, `max_time` (trainer/engine/time_budget.py) and a callback's `should_stop` end
  training at an optimizer-step boundary, inside the epoch.
- SIGTERM/SIGINT/USR2 only set a flag; the loop acts on it at the next optimizer-step boundary, so
  the checkpoint written on the way out is a state the uninterrupted run also passed through.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine import callback, checkpoint, data, distributed, evaluation, sharded_checkpoint
from decltrain.trainer.engine.callback import Callback
from decltrain.trainer.engine.device import (configure_determinism, explain_nondeterministic, load_rng_state,
                                             rng_state)
from decltrain.trainer.engine.optimizers import UNNAMED
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.profiler import build_profiler
from decltrain.trainer.engine.progress import Progress
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.shard_writer import ShardWriter
from decltrain.trainer.engine.step import TrainStep
from decltrain.trainer.engine.stop_signals import StopSignals
from decltrain.trainer.engine.task import Task, metric_names
from decltrain.trainer.engine.time_budget import TimeBudget
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger

log = logging.getLogger("decltrain")


class Trainer:
    """A Trainer complete after construction: placed model, loaders, step, callbacks, loggers.

    Without an `optimizer` it only evaluates (`evaluate`, `test`). A task with several optimizers
    (`SeveralOptimizers`) gets them as a dict by name, with a dict of schedules (a missing one: a
    constant learning rate). `fit(ckpt_path)` restores a checkpoint's full state before training.
    `config_yaml`, the resolved config, goes into every checkpoint. `placement` (made from the settings unless given) lets a command refuse what this
    machine cannot run before building.
    """

    def __init__(self, settings: TrainerSettings, model: nn.Module, splits: DataSplits, task: Task, *,
                 optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer] | None = None,
                 lr_schedule: LRSchedule | Mapping[str, LRSchedule] | None = None,
                 callbacks: dict[str, Callback] | None = None, loggers: dict[str, Logger] | None = None,
                 run_dir: str | Path = ".", config_yaml: str = "", placement: Placement | None = None) -> None:
        self.settings = settings
        torch.autograd.set_detect_anomaly(settings.detect_anomaly)
        placement = self.placement = placement or Placement(settings)
        self.device, self.world_size = placement.device, placement.world_size
        self.precision = placement.precision
        configure_determinism(settings.deterministic, settings.cudnn_benchmark)
        self.callbacks = dict(callbacks or {})
        self.run_dir = Path(run_dir)
        self.profiler = build_profiler(settings.profiler, self.run_dir, settings.profiler_schedule)
        self._handlers = callback.handlers(self.callbacks, self.profiler)
        self.loggers = dict(loggers or {})
        self.is_global_zero = distributed.is_global_zero()
        self.config_yaml = config_yaml

        optimizers = by_name(optimizer)
        schedules = by_name(lr_schedule)
        if UNNAMED not in optimizers and optimizers and self.world_size > 1:
            # Its parts are called directly (model.generator(...)), past DDP's forward and its gradient sync.
            raise UserError(f"task {type(task).__name__} steps several optimizers ({', '.join(optimizers)}), "
                            "which runs in one process only; set trainer.devices=1")
        placed = placement.wrap(model, optimizers.get(UNNAMED))
        self.model, self._eval_model = placed.train_module, placed.eval_module
        self.task, self.splits = task, splits
        self._optimizers = optimizers
        self.lr_schedules = {name: schedules.get(name) or LRSchedule(opt, None) for name, opt in optimizers.items()}
        self._stepping: str | None = None  # the optimizer being stepped, during on_before_optimizer_step
        self._shard_writer = ShardWriter(settings.fsdp.async_save) if placement.shards else None
        self.train_loader, self.val_loader, self.test_loader = data.split_loaders(
            splits, settings.seed, self.device, settings.overfit_batches, self.world_size, distributed.rank())
        self.num_train_batches = data.num_batches(self.train_loader, settings.limits["train"])
        if self.num_train_batches == 0:
            raise UserError("the training set gives no batch: lower dataset.batch_size or "
                            "raise trainer.limit_train_batches")
        self.step = None if not optimizers else TrainStep(
            placed, optimizers, task, self.precision, self.profiler, accumulate=settings.accumulate_grad_batches,
            num_batches=self.num_train_batches, nonfinite_loss=settings.nonfinite_loss, device=self.device)
        self.profiler.setup(self.device)
        callback.check_monitors(self.callbacks, list(self.lr_schedules.values()), metric_names(task, "val"))
        callback.check_sharding(self.callbacks, placement.shards)

        self.progress = Progress()
        self.should_stop = False
        self.should_log = False
        self.last_loss = float("nan")
        self.callback_metrics: dict[str, float] = {}
        self.validating_mid_epoch = False  # True while a `val_check_interval` validation runs
        agree = None if self.world_size == 1 else lambda value: distributed.max_over_ranks(value, self.device)
        self._stop = StopSignals(agree)
        self.time_budget = TimeBudget(settings.max_time, agree)

    # ------------------------------------------------------------- views of the progress record
    @property
    def epoch(self) -> int:
        """The epoch being trained (0-based); during its end events, the one that ended."""
        return self.progress.epoch

    @property
    def batch_idx(self) -> int:
        return self.progress.batch

    @property
    def global_step(self) -> int:
        return self.progress.step

    @property
    def max_epochs(self) -> int:
        return self.settings.max_epochs

    @property
    def log_every_n_steps(self) -> int:
        return self.settings.logging_interval(self.num_train_batches)

    @property
    def fast_dev_run(self) -> bool:
        return self.settings.fast_dev_run

    # ------------------------------------------------------------------------------------- fit
    def fit(self, ckpt_path: str | Path | None = None) -> None:
        """Trains until `max_epochs`, `max_steps`, a callback's `should_stop`, or a stop signal.

        The start is checkpoint `ckpt_path`'s full state when given (the run continues exactly
        where it was written), else the `init_from` weights (fine-tuning), else the model as built.
        """
        self._restore(ckpt_path)
        self.time_budget.start()
        self._call("on_fit_start")
        try:
            with self._stop.installed(), self.profiler.profiling():
                if ckpt_path is None and self.settings.validate_on_start:
                    self._validate_before_training()
                while self.epoch < self.max_epochs and not self._step_limit_reached() and not self.should_stop:
                    if not self._train_epoch():
                        break  # stopped inside the epoch: it is not finished, so its end does not run
                    self._end_epoch()
        except BaseException as error:
            self._call("on_exception", error)
            self.wait_for_checkpoint()
            explained = explain_nondeterministic(error)
            if explained:
                raise explained from error
            raise
        finally:
            for logger in self.loggers.values():
                logger.flush()
        self._call("on_fit_end")
        self.wait_for_checkpoint()
        if self.is_global_zero:
            self.profiler.report()

    def _train_epoch(self) -> bool:
        """Trains the rest of the current epoch; True when all its batches were trained."""
        step, schedules = self._training()
        progress = self.progress
        self.model.train()
        self.train_loader.start_epoch(progress.epoch, progress.batch)  # resumed mid-epoch: never load them
        self._call("on_train_epoch_start")
        for batch in self.profiler.iterate("data", self.train_loader):
            if progress.batch >= self.num_train_batches:
                break
            if step.starts_group(progress.batch):
                self._call("on_train_batch_start")
            ends_group = step.take(self.placement.batch(batch), progress.batch, progress.step + 1)
            progress.batch += 1
            if not ends_group:
                continue
            self._optimizer_step(step, schedules)
            if self.time_budget.spent() and not self.should_stop:  # spent() first: under DDP, a collective
                self.should_stop = True
                if self.is_global_zero:
                    log.warning("time ran out (trainer.max_time=%.0f s) at epoch %d, step %d: writing last.ckpt "
                                "and testing the best checkpoint", self.time_budget.budget, self.epoch + 1,
                                self.global_step)
            if self.settings.validates_after_step(progress.step, progress.batch, self.num_train_batches) \
                    and progress.batch < self.num_train_batches and not self._step_limit_reached():
                self._validate_mid_epoch()  # before a stop request: its checkpoint follows this validation
            self._raise_if_stop_requested()
            if self.should_stop or self._step_limit_reached():
                break
        return progress.batch >= self.num_train_batches

    def _optimizer_step(self, step: TrainStep, schedules: dict[str, LRSchedule]) -> None:
        """The step of a finished group: each of its optimizers in turn (one, or a task's several)."""
        self.should_log = (self.global_step + 1) % self.log_every_n_steps == 0
        stepped = False
        for name in step.phases(self.global_step + 1):
            if step.end_phase(name, self.global_step + 1) is None:
                log.warning("non-finite loss%s at step %d (epoch %d, batch %d): step skipped",
                            f" of optimizer.{name}" if name else "", self.global_step + 1, self.epoch + 1,
                            self.batch_idx)
                continue
            step.unscale(name)
            self._stepping = name
            self._call("on_before_optimizer_step")
            self._stepping = None
            step.apply(name)
            stepped = True
        step.end_step(stepped)
        if not stepped:
            self._skip_step()
            return
        self.profiler.step()
        self.progress.step += 1
        for schedule in schedules.values():
            schedule.after_optimizer_step(self.global_step)
        if self.should_log:
            loss, losses = step.pop_losses()
            self.last_loss = loss.item()  # the only host sync of a training step
            step.raise_if_nonfinite()
            self.log_metrics({"train/loss": self.last_loss, "train/epoch": self.epoch + 1,  # counted from 1, as logs are
                              **{name: value.item() for name, value in losses.items()},
                              **self.precision.report(self.global_step)})
        else:
            step.pop_losses()
        self._call("on_train_batch_end")

    def _skip_step(self) -> None:
        """`nonfinite_loss=skip`: every optimizer's loss of this group was non-finite, and its
        gradients are dropped; the step does not count.

        `on_train_batch_end` still closes the `on_train_batch_start` of this group (with
        `global_step` unchanged); `on_before_optimizer_step` does not run.
        """
        self.should_log = False
        self._call("on_train_batch_end")

    def _end_epoch(self) -> None:
        """Validation, the per-epoch scheduler and the end events of an epoch whose batches all trained."""
        step, schedules = self._training()
        metrics = self._validate() if (self.epoch + 1) % self.settings.check_val_every_n_epoch == 0 else {}
        step.raise_if_nonfinite()
        for schedule in schedules.values():
            schedule.after_epoch(self.global_step, metrics)
        if metrics:
            self._call("on_validation_end", metrics)
        self.progress.epoch_ended = True  # checkpoints from here resume at the next epoch
        self._call("on_train_epoch_end")
        self.progress.next_epoch()

    def _raise_if_stop_requested(self) -> None:
        self._stop.raise_if_requested(agree_now=self.global_step % self.log_every_n_steps == 0)

    def _step_limit_reached(self) -> bool:
        return 0 <= self.settings.max_steps <= self.global_step

    # ------------------------------------------------------------------------------ evaluation
    def _validate(self) -> dict[str, float]:
        self._call("on_validation_start")
        with self.profiler.section("validation"):
            metrics = self.evaluate(self.val_loader, "val")
        self.callback_metrics = metrics
        self.log_metrics(metrics)
        self.model.train()
        return metrics

    def _validate_before_training(self) -> None:
        """`validate_on_start`: the untrained model's metrics, logged at step 0 only.

        No event runs: monitors, checkpoints and schedulers see trained models only. The RNG is
        forked, so the validation draws nothing from the generators training uses.
        """
        devices = [self.device] if self.device.type == "cuda" else []
        with self.profiler.section("validation"), torch.random.fork_rng(devices=devices):
            self.log_metrics(self.evaluate(self.val_loader, "val"))
        self.model.train()

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
            state = self.read_checkpoint(ckpt_path)
            if sharded_checkpoint.KEY in state:
                sharded_checkpoint.load(self.model, None, state[sharded_checkpoint.KEY])
            else:
                checkpoint.load_model_weights(self.model, state["model"], str(ckpt_path))
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
            limit=self.settings.limits[split],
            before_batch=self._raise_if_stop_requested if watch else None)
        for name, image in images.items():
            self.log_image(name, image)
        return scalars

    # -------------------------------------------------------------------------------- logging
    def log_metrics(self, metrics: dict[str, float]) -> None:
        """To every logger, at the current `global_step` (global zero only)."""
        if self.is_global_zero:
            for logger in self.loggers.values():
                logger.log_metrics(metrics, self.global_step)

    def log_image(self, name: str, image: torch.Tensor) -> None:
        """A uint8 (C, H, W) image, e.g. the test confusion matrix."""
        if self.is_global_zero:
            for logger in self.loggers.values():
                logger.log_image(name, image, self.global_step)

    def _call(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            handler(self, *args)

    # ------------------------------------------------------------------ the checkpoint state
    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by name: a task's several, or the only one under `UNNAMED`."""
        return self._optimizers

    @property
    def optimizer_name(self) -> str:
        """The name of `optimizer`: `UNNAMED` for a run's only one."""
        if self._stepping is not None:
            return self._stepping
        if UNNAMED in self._optimizers or not self._optimizers:
            return UNNAMED
        raise UserError(f"task {type(self.task).__name__} steps several optimizers ({', '.join(self._optimizers)}) "
                        "and none is being stepped now: a callback that reads trainer.optimizer here needs a run "
                        "with one optimizer (read trainer.optimizers instead)")

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer being stepped (in `on_before_optimizer_step`), else the run's only one
        (callbacks read it during `fit`, when it always exists)."""
        self._training()
        return self._optimizers[self.optimizer_name]

    def _training(self) -> tuple[TrainStep, dict[str, LRSchedule]]:
        if self.step is None:
            raise UserError("this Trainer was built without an optimizer: it can evaluate and test, not train "
                            "or save training checkpoints")
        return self.step, self.lr_schedules

    def _restore(self, ckpt_path: str | Path | None) -> None:
        """The starting point of `fit`: a checkpoint's full state, else the `init_from` weights, else as built."""
        if ckpt_path is not None:
            self.load_state_dict(self.read_checkpoint(ckpt_path), str(ckpt_path))
            log.info("resumed from %s: epoch %d, batch %d, step %d", ckpt_path, self.epoch + 1, self.batch_idx,
                     self.global_step)
        elif self.settings.init_from:
            # Fine-tuning: weights only, from any checkpoint of this toolkit; a fresh optimizer.
            missing, unexpected, skipped = checkpoint.load_weights(self.model, self.settings.init_from,
                                                                   strict=self.settings.init_strict)
            log.info("initialised weights from %s%s", self.settings.init_from, "".join(
                f"; {label}: {', '.join(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("skipped (shape differs)", skipped)) if keys))

    def read_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Checkpoint `path`; a sharded one assembled whole unless the model is sharded too (then each rank
        reads its own shards from the folder under "shards")."""
        return checkpoint.load(path, assemble=not self.placement.shards)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the loop is now (sharded: gathered whole on rank 0,
        a collective)."""
        return self._state_with({
            "model": self.placement.weights(self.model),
            # one optimizer's state as it is; several: by name (as are their schedules)
            "optimizer": as_saved({name: self.placement.optimizer_state(self.model, optimizer)
                                   for name, optimizer in self._optimizers.items()})})

    def _state_with(self, weights: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint state around `weights` (the model and optimizer entries, none when sharded)."""
        _, schedules = self._training()
        state = {
            "format_version": checkpoint.FORMAT_VERSION,
            **weights,
            "lr_schedule": as_saved({name: schedule.state_dict() for name, schedule in schedules.items()}),
            "precision": self.precision.state_dict(),
            "progress": self.progress.state_dict(),
            "callbacks": {name: cb.state_dict() for name, cb in self.callbacks.items()},
            "loggers": {name: logger.state_dict() for name, logger in self.loggers.items()},
            "time_budget": self.time_budget.state_dict(),
            "rng": rng_state(),
            "config": self.config_yaml,
        }
        self._call("on_save_checkpoint", state)
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        """Restores `state` (read from `source`, which errors name): the loop continues where it was written."""
        _, schedules = self._training()
        checkpoint.check_format(state, source)
        self._call("on_load_checkpoint", state)
        saved_schedules = state["lr_schedule"]
        if sharded_checkpoint.KEY in state:  # read by a sharded model (one optimizer): each rank its shards
            sharded_checkpoint.load(self.model, self._optimizers.get(UNNAMED), state[sharded_checkpoint.KEY])
        else:
            checkpoint.load_model_weights(self.model, checkpoint.training_weights(state), source)
            saved_optimizers = state["optimizer"]
            for name, optimizer in self._optimizers.items():
                if name != UNNAMED and name not in saved_optimizers:
                    held = "one optimizer's" if "param_groups" in saved_optimizers else \
                        ", ".join(f"optimizer.{saved}" for saved in saved_optimizers)
                    raise UserError(f"checkpoint {source} holds no state of optimizer.{name}, only {held}: resume "
                                    "it with the optimizers it was written with")
                self.placement.load_optimizer_state(self.model, optimizer, saved_entry(saved_optimizers, name))
        for name, schedule in schedules.items():
            schedule.load_state_dict(saved_entry(saved_schedules, name))
        self.precision.load_state_dict(state["precision"])
        self.progress.load_state_dict(state["progress"])
        self.time_budget.load_state_dict(state["time_budget"])
        owners: list[tuple[dict[str, Any], dict[str, Any]]] = [(self.callbacks, state["callbacks"]),
                                                              (self.loggers, state["loggers"])]
        for objects, saved in owners:
            for name, owner in objects.items():
                if name in saved:
                    owner.load_state_dict(saved[name])
        # Each rank continues its own random streams; with another world size, rank 0's.
        per_rank = state.get("rng_per_rank") or []
        load_rng_state(per_rank[distributed.rank()] if len(per_rank) == self.world_size else state["rng"])

    def save_checkpoint(self, path: str | Path) -> None:
        """Writes the full state atomically; only the global-zero process writes the file, and with a
        sharded model every rank its shards (trainer/engine/sharded_checkpoint.py).

        A state whose loss went non-finite is never written: the last good file stays.
        """
        step, _ = self._training()
        step.raise_if_nonfinite()
        # A collective: callbacks save on every rank at the same step (also after a stop signal,
        # which the ranks agree on in `_raise_if_stop_requested`).
        rng_states = distributed.gather_object(rng_state())
        with self.profiler.section("checkpointing"):
            state = None
            if self.is_global_zero:
                state = self._state_with({}) if self._shard_writer else self.state_dict()
                if len(rng_states) > 1:
                    state["rng_per_rank"] = rng_states
            if self._shard_writer is not None:
                # sharded runs have one optimizer (several are refused in several processes)
                self._shard_writer.save(self.model, self._optimizers[UNNAMED], Path(path), self.global_step, state)
            elif state is not None:
                checkpoint.save_atomic(state, Path(path))

    def wait_for_checkpoint(self) -> None:
        """Returns once the checkpoint file last saved exists (`trainer.fsdp.async_save` writes in the background)."""
        if self._shard_writer is not None:
            self._shard_writer.wait()


def as_saved(states: dict[str, Any]) -> Any:
    """A checkpoint entry of every optimizer (or schedule): the only one's state as it is, several by name."""
    return states[UNNAMED] if UNNAMED in states else states


def saved_entry(saved: Any, name: str) -> Any:
    """Optimizer (or schedule) `name`'s state in a checkpoint entry `as_saved` wrote."""
    return saved if name == UNNAMED else saved[name]


def by_name(given: Any) -> dict[str, Any]:
    """One optimizer (or schedule) under `UNNAMED`, several as they are named; none: empty."""
    if isinstance(given, Mapping):
        return dict(given)
    return {} if given is None else {UNNAMED: given}
