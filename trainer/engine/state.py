"""The Trainer's state: what a checkpoint holds, how it is restored and written, what was logged.

A base of `Trainer` (trainer/engine/loop.py), apart so the loop file holds only the loop. The
file format itself (atomic writes, safe loading, weight matching) is trainer/engine/checkpoint.py.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decltrain.callbacks.base import Callback
from decltrain.trainer.engine import checkpoint, distributed
from decltrain.trainer.engine.device import load_rng_state, rng_state
from decltrain.trainer.engine.position import Position
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.profiler import Profiler
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.step import TrainStep
from decltrain.trainer.errors import UserError
from decltrain.trainer.tracking.loggers import Logger

log = logging.getLogger("decltrain")


class CheckpointState:
    # Set by Trainer.__init__.
    settings: TrainerSettings
    model: nn.Module
    _optimizer: torch.optim.Optimizer | None  # None: built to evaluate only
    lr_schedule: LRSchedule | None
    step: TrainStep | None
    precision: Precision
    profiler: Profiler
    position: Position
    epoch: int
    batch_idx: int
    global_step: int
    callbacks: dict[str, Callback]
    loggers: list[Logger]
    world_size: int
    is_global_zero: bool
    config_yaml: str
    # Scalars logged at `_logged_step`: a checkpoint keeps those of its own step, so a resumed
    # run can drop what the earlier run logged at that step after its checkpoint (a test).
    _logged_step: int
    _logged: dict[str, float]

    def _call(self, event: str, *args: Any) -> None:
        raise NotImplementedError

    def _start(self, resume: dict[str, Any] | None, source: str) -> None:
        """The starting point: a checkpoint's full state, else the `init_from` weights, else as built."""
        if resume is not None:
            self.load_state_dict(resume, source)
        elif self.settings.init_from:
            self._init_weights(self.settings.init_from)

    def _init_weights(self, path: str) -> None:
        """Fine-tuning start: weights only, from any checkpoint of this toolkit; a fresh optimizer."""
        missing, unexpected, skipped = checkpoint.load_weights(self.model, path, strict=self.settings.init_strict)
        log.info("initialised weights from %s%s", path, "".join(
            f"; {label}: {', '.join(keys)}" for label, keys in
            (("missing", missing), ("unexpected", unexpected), ("skipped (shape differs)", skipped)) if keys))

    def load_weights(self, path: str | Path) -> None:
        """The model weights of checkpoint file `path` (e.g. the best one, to test it)."""
        checkpoint.load_weights(self.model, path)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """To every logger (global zero only); the scalars of the current step are kept for its checkpoint."""
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

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer being stepped (callbacks read it during `fit`, when it always exists)."""
        return self._training()[1]

    def _training(self) -> tuple[TrainStep, torch.optim.Optimizer, LRSchedule]:
        if self.step is None or self._optimizer is None or self.lr_schedule is None:
            raise UserError("this Trainer was built without an optimizer: it can evaluate and test, not train "
                            "or save training checkpoints")
        return self.step, self._optimizer, self.lr_schedule

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the loop is now."""
        _, optimizer, lr_schedule = self._training()
        state = {
            "format_version": checkpoint.FORMAT_VERSION,
            "model": checkpoint.unwrap(self.model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "precision": self.precision.state_dict(),
            "progress": self.position.state_dict(),
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
        _, optimizer, lr_schedule = self._training()
        self._call("on_load_checkpoint", state)
        checkpoint.load_model_weights(self.model, checkpoint.training_weights(state), source)
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        self.precision.load_state_dict(state["precision"])
        self.position = Position.from_state(state["progress"])
        self.epoch, self.batch_idx, self.global_step = self.position
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
        step, _, _ = self._training()
        step.raise_if_nonfinite()
        # A collective: callbacks save on every rank at the same step (also after a stop signal,
        # which the ranks agree on in `Trainer._raise_if_stop_requested`).
        rng_states = distributed.gather_object(rng_state())
        if self.is_global_zero:
            with self.profiler.section("checkpointing"):
                state = self.state_dict()
                if len(rng_states) > 1:
                    state["rng_per_rank"] = rng_states
                checkpoint.save_atomic(state, Path(path))
