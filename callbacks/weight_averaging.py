"""Weight averaging (EMA, SWA): an averaged copy of the model evaluates while the raw weights train.

Built on `torch.optim.swa_utils.AveragedModel`. Once the average holds anything:
- validation swaps the averaged weights into the model (`on_validation_start`) and the raw ones
  back (`on_validation_end`), so `val/*`, early stopping and the checkpoints' scores measure
  the average;
- every checkpoint holds the averaged weights under "model" (what `best.ckpt`, the final test,
  evaluate, predict and export-model use) and the raw ones under "training_weights" (what a
  resumed run trains on); the average continues from the checkpoint, so resume stays exact;
- at the end of fit the averaged weights stay in the model.
Every DDP rank keeps the same average (the ranks' weights are identical after each step).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.checkpoint import unwrap


class WeightAveraging(Callback):
    """The shared mechanism; subclasses decide when to update and how to average."""

    use_buffers = True  # average BatchNorm statistics too (SWA recomputes them instead)
    works_on_shards = False  # the average is a whole copy of the model (AveragedModel), on every rank

    def __init__(self) -> None:
        self._averaged: AveragedModel | None = None
        self.num_averaged = 0  # a host-side copy of AveragedModel.n_averaged: reading it costs no sync
        self._loaded: dict[str, torch.Tensor] | None = None  # averaged weights of a resumed checkpoint
        self._raw: dict[str, torch.Tensor] | None = None  # the raw weights while the average is swapped in

    def multi_avg_fn(self, averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor],
                     num_averaged: torch.Tensor | int) -> None:
        raise NotImplementedError

    def on_fit_start(self, trainer: TrainerView) -> None:
        model = unwrap(trainer.model)
        self._averaged = AveragedModel(model, multi_avg_fn=self.multi_avg_fn, use_buffers=self.use_buffers)
        if self._loaded is not None:
            self._averaged.module.load_state_dict(self._loaded)
            self._loaded = None
        self.averaged.n_averaged.fill_(self.num_averaged)

    @property
    def averaged(self) -> AveragedModel:
        assert self._averaged is not None, "on_fit_start creates the average, before any event that reads it"
        return self._averaged

    def update(self, trainer: TrainerView) -> None:
        self.averaged.update_parameters(unwrap(trainer.model))
        self.num_averaged += 1

    def prepare(self, trainer: TrainerView) -> None:
        """Called before the average is evaluated (SWA recomputes BatchNorm statistics here)."""

    def on_validation_start(self, trainer: TrainerView) -> None:
        if self.num_averaged:
            self.prepare(trainer)
            model = unwrap(trainer.model)
            self._raw = {name: value.detach().clone() for name, value in model.state_dict().items()}
            model.load_state_dict(self.averaged.module.state_dict())

    def _restore_raw(self, trainer: TrainerView) -> None:
        if self._raw is not None:
            unwrap(trainer.model).load_state_dict(self._raw)
            self._raw = None

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        self._restore_raw(trainer)

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        self._restore_raw(trainer)  # runs before the checkpoint callbacks save on the way out

    def on_fit_end(self, trainer: TrainerView) -> None:
        if self.num_averaged:
            self.prepare(trainer)
            unwrap(trainer.model).load_state_dict(self.averaged.module.state_dict())

    def on_save_checkpoint(self, trainer: TrainerView, state: dict[str, Any]) -> None:
        if self.num_averaged:
            state["training_weights"] = state["model"]
            state["model"] = self.averaged.module.state_dict()

    def on_load_checkpoint(self, trainer: TrainerView, state: dict[str, Any]) -> None:
        if "training_weights" in state:
            self._loaded = state["model"]

    def state_dict(self) -> dict[str, Any]:
        return {"num_averaged": self.num_averaged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_averaged = int(state["num_averaged"])


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
