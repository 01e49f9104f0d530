"""The Trainer: the whole training, validation and test loop in one file.

Invariants worth knowing when reading the loop:
- `global_step` counts optimizer steps (not batches); schedulers, `max_steps`, logging and
  `every_n_train_steps` all speak of optimizer steps.
- `position` (a `Position`) is the one value a checkpoint keeps of the loop's progress. It moves
  at optimizer-step boundaries only (a checkpoint never holds half an accumulation group), and
  to the next epoch only after all of an epoch's batches trained and its end (validation, the
  per-epoch scheduler) ran. A stop inside an epoch (`max_steps`, a callback's `should_stop`)
  leaves it inside that epoch: the epoch's end does not run, and a resumed run finishes it.
- `batch_idx` is the number of batches of the current epoch already consumed (micro-batches too).
- The training loss reaches Python (`.item()`, a host sync) only on logging steps.
- SIGTERM/SIGINT/USR2 only set a flag; the loop acts on it at the next optimizer-step boundary, so
  the checkpoint written on the way out is a state the uninterrupted run also passed through.
"""
from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric

from decltrain.callbacks.base import EVENTS, Callback, overrides
from decltrain.callbacks.monitor import Monitor
from decltrain.callbacks.timer import Timer
from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine import checkpoint, data, distributed
from decltrain.trainer.runs import requeue
from decltrain.trainer.engine.device import configure_determinism, explain_nondeterministic, load_rng_state, rng_state
from decltrain.trainer.errors import NonFiniteLoss, Preempted, UserError
from decltrain.trainer.tracking.loggers import Logger
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.profiler import build_profiler
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.task import Task

log = logging.getLogger("trainer")

STRATEGIES = ("auto", "ddp")


class Position(NamedTuple):
    """Where training continues: epoch `epoch` (0-based), after its first `batch` batches."""
    epoch: int = 0
    batch: int = 0


class Trainer:
    def __init__(self, *, accelerator: str = "auto", strategy: str = "auto", devices: int = 1,
                 sync_batchnorm: bool = False, compile: bool | str = False, precision: str = "32", max_epochs: int = 10,
                 max_steps: int = -1, accumulate_grad_batches: int = 1, check_val_every_n_epoch: int = 1,
                 log_every_n_steps: int = 50, fast_dev_run: bool = False,
                 limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None, deterministic: bool = False,
                 cudnn_benchmark: bool = False, seed: int = 42, nonfinite_loss: str = "stop",
                 init_from: str | None = None, init_strict: bool = True, val_check_interval: int | None = None,
                 max_time: str | float | None = None, overfit_batches: int = 0, detect_anomaly: bool = False,
                 profiler: str | None = None, profiler_schedule: dict[str, int] | None = None,
                 callbacks: dict[str, Callback] | None = None, loggers: list[Logger] | None = None,
                 run_dir: str | Path = ".") -> None:
        for key, value in (("max_epochs", max_epochs), ("accumulate_grad_batches", accumulate_grad_batches),
                           ("check_val_every_n_epoch", check_val_every_n_epoch),
                           ("log_every_n_steps", log_every_n_steps), ("devices", devices),
                           ("val_check_interval", 1 if val_check_interval is None else val_check_interval)):
            if value < 1:
                raise UserError(f"trainer.{key}={value} must be at least 1")
        strategy = str(getattr(strategy, "value", strategy))
        if strategy not in STRATEGIES:
            raise UserError(f"trainer.strategy={strategy!r} is not implemented; use auto (one process, DDP when "
                            "trainer.devices > 1 or under torchrun) or ddp (the same, but refused in one process)")
        if overfit_batches < 0:
            raise UserError(f"trainer.overfit_batches={overfit_batches} must be 0 (off) or a number of batches")
        self.val_check_interval = val_check_interval
        self.overfit_batches = overfit_batches
        torch.autograd.set_detect_anomaly(detect_anomaly)
        if nonfinite_loss not in ("stop", "skip"):
            raise UserError(f"trainer.nonfinite_loss={nonfinite_loss!r} is not valid; use 'stop' or 'skip'")
        self.nonfinite_loss = nonfinite_loss
        self.init_from = init_from
        self.init_strict = init_strict
        # Launching happens before the Trainer exists (trainer/commands/launch.py): here the world is given.
        self.world_size = distributed.world_size()
        if devices > 1 and self.world_size == 1:
            raise UserError(f"trainer.devices={devices} needs {devices} processes; start the run with the `train` "
                            "command or torchrun, not by building a Trainer in one process")
        if strategy == "ddp" and self.world_size == 1:
            raise UserError("trainer.strategy=ddp needs several processes: set trainer.devices=N (N > 1) or start "
                            "with torchrun; trainer.strategy=auto runs one process")
        self.sync_batchnorm = sync_batchnorm
        self.compile_mode = compile_mode(compile)
        self.device = distributed.device(str(getattr(accelerator, "value", accelerator)))
        if sync_batchnorm and self.device.type != "cuda":
            raise UserError("trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm has no CPU "
                            "kernel); set trainer.sync_batchnorm=false on CPU")
        self.precision = Precision(precision, self.device)
        configure_determinism(deterministic, cudnn_benchmark)
        self.fast_dev_run = fast_dev_run
        self.max_epochs = 1 if fast_dev_run else max_epochs
        self.max_steps = max_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.log_every_n_steps = 1 if fast_dev_run else log_every_n_steps
        one_batch = 1 if fast_dev_run else None
        self.limits = {"train": one_batch or overfit_batches or limit_train_batches,
                       "val": one_batch or overfit_batches or limit_val_batches,
                       "test": one_batch or limit_test_batches}
        self.seed = seed
        self.callbacks = dict(callbacks or {})
        if max_time is not None:
            self.callbacks.setdefault("timer", Timer(max_time))
        self.run_dir = Path(run_dir)
        self.profiler = build_profiler(profiler, self.run_dir, profiler_schedule)
        # Per event, only the callbacks that do something on it: idle ones cost nothing per step.
        # Callbacks that write checkpoints come last, so a file holds every other callback's
        # update of the same event (early stopping's counter, the weight average of this step).
        ordered = sorted(self.callbacks.items(), key=lambda item: item[1].writes_checkpoints)
        self._handlers = {event: [self.profiler.wrap(f"{name}.{event}", getattr(cb, event))
                                  for name, cb in ordered if overrides(cb, event)] for event in EVENTS}
        self.loggers = list(loggers or [])
        self.is_global_zero = distributed.is_global_zero()
        self.config_yaml = ""  # the resolved config, stored in every checkpoint by the caller

        self.position = Position()
        self.epoch = 0  # the epoch being trained (0-based); during its end events, the one that ended
        self.batch_idx = 0
        self.global_step = 0
        self.should_stop = False
        self.should_log = False
        self.last_loss = float("nan")
        self.callback_metrics: dict[str, float] = {}
        self.validating_mid_epoch = False  # True while a `val_check_interval` validation runs
        # Scalars logged at `_logged_step`: a checkpoint keeps those of its own step, so a resumed
        # run can drop what the earlier run logged at that step after its checkpoint (a test).
        self._logged_step, self._logged = -1, {}
        self._signal: int | None = None  # set by the stop-signal handler during fit

    # ----------------------------------------------------------------------------------- setup
    def setup(self, model: nn.Module, splits: DataSplits, optimizer: torch.optim.Optimizer,
              lr_schedule: LRSchedule, task: Task, resume: dict[str, Any] | None = None,
              resume_source: str = "") -> None:
        """Moves the model to the device, builds the loaders and sets the starting point.

        The start is a checkpoint's full state when resuming (`resume`, read from
        `resume_source`), else the `init_from` weights (fine-tuning), else the model as built: a
        resumed run never reads `init_from` again. Separate from `fit` for `test`.
        """
        self._wrap_model(model)
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.task = task
        self.splits = splits
        shard = {"num_replicas": self.world_size, "rank": distributed.rank()}
        # overfit_batches: train and validate on the same first batches of the validation split
        # (which carries no augmentation): unshuffled, and validated at the training batch size.
        train_split = splits.val if self.overfit_batches else splits.train
        self.train_loader = data.train_loader(train_split, splits.loader, self.seed, self.device,
                                              shuffle=not self.overfit_batches, **shard)
        val_settings = replace(splits.loader, eval_batch_size=None) if self.overfit_batches else splits.loader
        self.val_loader = data.eval_loader(splits.val, val_settings, self.device, **shard)
        self.test_loader = data.eval_loader(splits.test, splits.loader, self.device, **shard)
        self.num_train_batches = data.num_batches(self.train_loader, self.limits["train"])
        if self.num_train_batches == 0:
            raise UserError("the training set gives no batch: lower dataset.batch_size or "
                            "raise trainer.limit_train_batches")
        # The optimizer step (1-based) whose loss first was NaN/inf; -1 while all were finite.
        # Kept on the device so that watching for it costs no host sync.
        self._first_nonfinite = torch.tensor(-1, device=self.device)
        self.profiler.setup(self.device)
        self._check_monitors()
        if resume is not None:
            self.load_state_dict(resume, resume_source)
        elif self.init_from:
            self._init_weights(self.init_from)

    def _check_monitors(self) -> None:
        """Every monitored name (callbacks, scheduler) is a metric the task produces: checked before training."""
        available = self.task.metric_names("val")
        for monitor in [getattr(callback, "monitor", None) for callback in self.callbacks.values()]:
            if isinstance(monitor, Monitor):
                monitor.check(available)
        self.lr_schedule.check_monitor(available)

    def _wrap_model(self, model: nn.Module) -> None:
        """`model` on the device, under SyncBatchNorm, DDP and torch.compile as configured.

        DDP wraps before compiling, as PyTorch recommends (the compiler then splits the graph at
        DDP's gradient buckets). Evaluation runs the module without DDP (`_eval_model`): ranks may
        hold shards of unequal length, and DDP's forward may call collectives.
        """
        if self.sync_batchnorm and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self._channels_last = uses_channels_last(model, self.device)
        layout = torch.channels_last if self._channels_last else torch.preserve_format
        model = model.to(self.device, memory_format=layout)
        self.model = self._eval_model = model
        self._ddp: DistributedDataParallel | None = None
        if self.world_size > 1:
            self.model = self._ddp = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if self.compile_mode:
            self.model = torch.compile(self.model, mode=self.compile_mode)
            self._eval_model = self.model if self._ddp is None else torch.compile(model, mode=self.compile_mode)

    def _inputs_on_device(self, batch: Any) -> tuple[Any, Any]:
        """(inputs, targets) on the device; image batches in the model's memory layout."""
        inputs, targets = _to_device(batch, self.device)
        if self._channels_last and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets

    def _gradient_sync(self, last_of_group: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP all-reduces gradients only on the last micro-batch of an accumulation group."""
        if self._ddp is None or last_of_group:
            return contextlib.nullcontext()
        return self._ddp.no_sync()

    def _init_weights(self, path: str) -> None:
        """Fine-tuning start: weights only, from any checkpoint of this toolkit; a fresh optimizer."""
        missing, unexpected, skipped = checkpoint.load_weights(self.model, path, strict=self.init_strict)
        log.info("initialised weights from %s%s", path, "".join(
            f"; {label}: {', '.join(keys)}" for label, keys in
            (("missing", missing), ("unexpected", unexpected), ("skipped (shape differs)", skipped)) if keys))

    # ------------------------------------------------------------------------------------- fit
    def fit(self) -> None:
        """Trains until `max_epochs`, `max_steps`, a callback's `should_stop`, or a stop signal."""
        self._call("on_fit_start")
        try:
            with self._stop_signals(), self.profiler.profiling():
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

    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """SIGTERM, SIGINT and submitit's early signal (USR2) stop the loop at the next step.

        A second SIGINT aborts at once. The handlers installed before (submitit's, in a SLURM job)
        are back in place afterwards: trainer/runs/requeue.py hands the stop on to them.
        """
        def request_stop(signum: int, frame: object) -> None:
            if self._signal is not None and signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._signal = signum
            log.warning("%s received: stopping after the current step (Ctrl-C again to abort at once)",
                        signal.Signals(signum).name)

        stop_signals = (signal.SIGTERM, signal.SIGINT, requeue.early_signal())
        previous = {signum: signal.getsignal(signum) for signum in stop_signals}
        for signum in previous:
            signal.signal(signum, request_stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _raise_if_stop_requested(self) -> None:
        """Acts on a stop signal at an optimizer-step boundary.

        Under DDP every rank must leave at the same step, or the one that goes on waits on a
        collective the others never join: the ranks agree (one small all-reduce) on logging
        steps only, so signals cost no extra sync on other steps.
        """
        signum = self._signal
        if self.world_size > 1:
            if self.global_step % self.log_every_n_steps:
                return
            signum = distributed.max_over_ranks(signum or 0, self.device) or None
        if signum is not None:
            raise Preempted(signum)

    def _step_limit_reached(self) -> bool:
        return 0 <= self.max_steps <= self.global_step

    def _end_epoch(self) -> None:
        """Validation, the per-epoch scheduler and the end events of an epoch whose batches all trained."""
        metrics = self._validate() if (self.epoch + 1) % self.check_val_every_n_epoch == 0 else {}
        self._raise_if_nonfinite()
        self.lr_schedule.after_epoch(self.global_step, metrics)
        if metrics:
            self._call("on_validation_end", metrics)
        self.position = Position(self.epoch + 1, 0)  # checkpoints written from here on start the next epoch
        self._call("on_train_epoch_end")
        self.epoch, self.batch_idx = self.position

    def _train_epoch(self) -> bool:
        """Trains the rest of the current epoch; True when all its batches were trained."""
        self.model.train()
        self.epoch, self.batch_idx = self.position
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch)
        sampler.skip = self.batch_idx * self.train_loader.batch_size  # resumed mid-epoch: never load them
        self._call("on_train_epoch_start")
        group_is_finite = torch.ones((), dtype=torch.bool, device=self.device)
        group_loss = torch.zeros((), device=self.device)
        for batch in self.profiler.iterate("data", self.train_loader):
            if self.batch_idx >= self.num_train_batches:
                break
            group_start = self.batch_idx - self.batch_idx % self.accumulate_grad_batches
            group_size = min(self.accumulate_grad_batches, self.num_train_batches - group_start)
            if self.batch_idx == group_start:
                self._call("on_train_batch_start")
            inputs, targets = self._inputs_on_device(batch)
            with self._gradient_sync(self.batch_idx + 1 - group_start == group_size):
                with self.profiler.section("forward"), self.precision.autocast():
                    loss = self.task.loss(self.model(inputs), targets)
                if self.nonfinite_loss == "skip":
                    group_is_finite &= torch.isfinite(loss.detach())
                else:
                    finite = torch.isfinite(loss.detach())
                    self._first_nonfinite = torch.where(~finite & (self._first_nonfinite < 0),
                                                        self.global_step + 1, self._first_nonfinite)
                # Each micro-batch carries its share of the group, so the step sees the group's mean
                # loss; the last group of an epoch may be smaller and is still stepped.
                share = loss / group_size if group_size > 1 else loss
                with self.profiler.section("backward"):
                    self.precision.backward(share)
                group_loss += share.detach()  # train/loss is the group's mean, as the step saw it
            self.batch_idx += 1
            if self.batch_idx - group_start == group_size:
                self.position = Position(self.epoch, self.batch_idx)  # before on_train_batch_end may save
                if self.nonfinite_loss != "skip" or self._all_ranks_finite(group_is_finite):
                    self._optimizer_step(group_loss)
                else:
                    self._skip_step()
                group_is_finite.fill_(True)
                group_loss = torch.zeros((), device=self.device)
                if self.val_check_interval and self.global_step % self.val_check_interval == 0 \
                        and self.batch_idx < self.num_train_batches and not self._step_limit_reached():
                    self._validate_mid_epoch()  # before a stop request: its checkpoint follows this validation
                self._raise_if_stop_requested()
                if self.should_stop or self._step_limit_reached():
                    break
        return self.batch_idx >= self.num_train_batches

    def _all_ranks_finite(self, finite: torch.Tensor) -> bool:
        """`nonfinite_loss=skip`: one host sync per step, and under DDP one all-reduce, so every rank
        skips the same steps (a NaN on one rank reached every rank's gradients) and keeps the same
        `global_step`."""
        return distributed.min_over_ranks(int(finite), self.device) == 1

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        self.should_log = (self.global_step + 1) % self.log_every_n_steps == 0
        self.precision.unscale(self.optimizer)
        self._call("on_before_optimizer_step")
        with self.profiler.section("optimizer"):
            self.precision.step(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
        self.profiler.step()
        self.global_step += 1
        self.lr_schedule.after_optimizer_step(self.global_step)
        if self.should_log:
            self.last_loss = loss.item()  # the only host sync of a training step
            self._raise_if_nonfinite()
            self.log_metrics({"train/loss": self.last_loss, "epoch": self.epoch,
                              **self.precision.report(self.global_step)})
        self._call("on_train_batch_end")

    def _skip_step(self) -> None:
        """`nonfinite_loss=skip`: drop this group's gradients; the step does not count.

        `on_train_batch_end` still closes the `on_train_batch_start` of this group (with
        `global_step` unchanged); `on_before_optimizer_step` does not run.
        """
        self.optimizer.zero_grad(set_to_none=True)
        self.should_log = False
        log.warning("non-finite loss at step %d (epoch %d, batch %d): step skipped",
                    self.global_step + 1, self.epoch + 1, self.batch_idx)
        self._call("on_train_batch_end")

    def _raise_if_nonfinite(self) -> None:
        """Stops with the step whose loss went NaN/inf; called before anything is logged or saved."""
        bad_step = int(self._first_nonfinite)
        if bad_step >= 0:
            raise NonFiniteLoss(
                f"the training loss became NaN or infinite at step {bad_step}; training stopped and the "
                "checkpoints written before it are kept. Lower optimizer.lr, set "
                "callbacks.gradient_clipping.value, or use trainer.nonfinite_loss=skip")

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
            self._raise_if_nonfinite()
            self._call("on_validation_end", metrics)
        finally:
            self.validating_mid_epoch = False

    def test(self, ckpt_path: str | Path | None = None) -> dict[str, float]:
        """Tests the model, after loading the weights of `ckpt_path` when given."""
        distributed.barrier()  # under DDP, rank 0 has finished writing the checkpoint every rank reads
        if ckpt_path is not None:
            checkpoint.load_weights(self.model, ckpt_path)
        metrics = self.evaluate(self.test_loader, "test")
        self.log_metrics(metrics)
        return metrics

    @torch.no_grad()
    def evaluate(self, loader: data.Loader, split: str) -> dict[str, float]:
        """Metrics of the model over `loader` (reduced over every rank), keyed `split/name`."""
        self.model.eval()
        distributed.broadcast_buffers(checkpoint.unwrap(self.model))
        metrics = self.task.metrics(self.device, confusion_matrix=split == "test")
        loss_meter = MeanMetric().to(self.device)
        limit = data.num_batches(loader, self.limits[split])
        for index, batch in enumerate(loader):
            if index >= limit:
                break
            # A long validation must not delay a preemption (ranks hold unequal shards: no collective
            # in this loop). A mid-epoch one finishes first: its step's checkpoint follows it.
            if self.world_size == 1 and not self.validating_mid_epoch:
                self._raise_if_stop_requested()
            inputs, targets = self._inputs_on_device(batch)
            with self.precision.autocast():
                outputs = self._eval_model(inputs)
            self.task.update(metrics, loss_meter, outputs.float(), targets)
        scalars, images = self.task.summarize(metrics.compute(), self.splits.class_names)
        for name, image in images.items():
            self.log_image(f"{split}/{name}", image)
        results = {f"{split}/{name}": value for name, value in scalars.items()}
        results[f"{split}/loss"] = float(loss_meter.compute())
        return results

    # ------------------------------------------------------------------------- logging, state
    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.is_global_zero:
            if self._logged_step != self.global_step:
                self._logged_step, self._logged = self.global_step, {}
            self._logged.update(metrics)
            for logger in self.loggers:
                logger.log_metrics(metrics, self.global_step)

    def log_image(self, name: str, image: torch.Tensor) -> None:
        """A uint8 (C, H, W) image, e.g. the test confusion matrix."""
        if self.is_global_zero:
            for logger in self.loggers:
                logger.log_image(name, image, self.global_step)

    def _call(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            handler(self, *args)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the loop is now."""
        state = {
            "format_version": checkpoint.FORMAT_VERSION,
            "model": checkpoint.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "precision": self.precision.state_dict(),
            "progress": {"epoch": self.position.epoch, "batch_idx": self.position.batch,
                         "global_step": self.global_step},
            "callbacks": {name: cb.state_dict() for name, cb in self.callbacks.items()},
            # e.g. the MLflow run id, so a resumed run continues the same tracked run
            "loggers": {key: value for logger in self.loggers for key, value in logger.state_dict().items()},
            "rng": rng_state(),
            "config": self.config_yaml,
            "logged_at_step": dict(self._logged) if self._logged_step == self.global_step else {},
        }
        self._call("on_save_checkpoint", state)
        return state

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        self._call("on_load_checkpoint", state)
        checkpoint.load_model_weights(self.model, checkpoint.training_weights(state), source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.precision.load_state_dict(state["precision"])
        progress = state["progress"]
        self.position = Position(progress["epoch"], progress["batch_idx"])
        (self.epoch, self.batch_idx), self.global_step = self.position, progress["global_step"]
        for name, callback in self.callbacks.items():
            if name in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][name])
        # Each rank continues its own random streams; with another world size, rank 0's.
        per_rank = state.get("rng_per_rank") or []
        load_rng_state(per_rank[distributed.rank()] if len(per_rank) == self.world_size else state["rng"])
        # What the earlier run logged at this step before the checkpoint: the loggers that purged
        # from this step (trainer/commands/train_job.py), dropping what it logged after (a final test), get it again.
        self._logged_step, self._logged = self.global_step, dict(state.get("logged_at_step") or {})
        if self.is_global_zero and self._logged:
            for logger in self.loggers:
                if logger.purges:
                    logger.log_metrics(self._logged, self.global_step)

    def save_checkpoint(self, path: str | Path) -> None:
        """Writes the full state atomically; only the global-zero process writes.

        A state whose loss went non-finite is never written: the last good file stays.
        """
        self._raise_if_nonfinite()
        # A collective: callbacks save on every rank at the same step (also after a stop signal,
        # which the ranks agree on in `_raise_if_stop_requested`).
        rng_states = distributed.gather_object(rng_state())
        if self.is_global_zero:
            with self.profiler.section("checkpointing"):
                state = self.state_dict()
                if len(rng_states) > 1:
                    state["rng_per_rank"] = rng_states
                checkpoint.save_atomic(state, Path(path))


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(setting: bool | str | None) -> str | None:
    """`trainer.compile` as a torch.compile mode: false -> none, true -> `default`, or a mode by name.

    `reduce-overhead` records CUDA graphs: one launch replays a whole step, for small models
    whose steps are bound by kernel launches (on CPU it compiles like `default`).
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return "default"
    if setting in COMPILE_MODES:
        return str(setting)
    raise UserError(f"trainer.compile={setting!r} is not valid; use true, false or a torch.compile mode: "
                    + ", ".join(COMPILE_MODES))


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """NHWC memory for convolutional models on CUDA, where cuDNN's channels-last kernels pay.

    On CPU the MNIST CNN measured slower in NHWC (the machine of scripts/benchmark.py), so CPU
    runs keep the default layout.
    """
    return device.type == "cuda" and any(isinstance(module, nn.Conv2d) for module in model.modules())


def _to_device(batch: Any, device: torch.device) -> Any:
    """Moves tensors (also inside tuples, lists and dicts) to `device` without blocking the host."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch
