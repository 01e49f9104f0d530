"""A small model and a Trainer on synthetic data, for tests of the Trainer API."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from decltrain.datasets.base import DataSplits
from decltrain.trainer.engine.loop import Trainer
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.scheduling import LRSchedule
from decltrain.trainer.engine.settings import TrainerSettings
from decltrain.trainer.engine.task import Task
from decltrain.trainer.tasks.classification import Classification
from tests.helpers.data import synthetic_splits


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3, input_shape: tuple[int, ...] = (8,), dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RecordingLogger:
    """The metrics the Trainer logs, by name."""

    def __init__(self) -> None:
        self.logged: dict[str, list[float]] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.logged.setdefault(name, []).append(value)

    def log_image(self, name: str, image: torch.Tensor, step: int) -> None:
        self.logged.setdefault(name, []).append(float(image.float().mean()))

    def flush(self) -> None:
        pass


def make_trainer(tmp_path: Path, callbacks: dict | None = None, splits: DataSplits | None = None,
                 lr: float = 0.05, model: nn.Module | None = None,
                 optimizer: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer] | None = None,
                 schedule: Callable[[torch.optim.Optimizer], LRSchedule] | None = None,
                 loggers: dict | None = None, placement: Placement | None = None, task: Task | None = None,
                 **trainer_kwargs) -> Trainer:
    """A Trainer on synthetic data, seeded, ready for `fit` (`fit(ckpt_path)` to resume).

    `model` (a TinyNet unless given) is trained for `task` (3-class classification unless given)
    by `optimizer(params)` (SGD with `lr` and momentum 0.9 unless given), scheduled by
    `schedule(optimizer)` (none unless given)."""
    torch.manual_seed(0)
    splits = splits or synthetic_splits()
    model = TinyNet(splits.num_classes, splits.input_shape) if model is None else model
    optimizer_ = (optimizer or (lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)))(model.parameters())
    trainer_kwargs.setdefault("max_epochs", 3)
    trainer_kwargs.setdefault("accelerator", "cpu")
    task = task or Classification(nn.CrossEntropyLoss(), "multiclass", splits.num_classes)
    return Trainer(TrainerSettings(**trainer_kwargs), model, splits, task, optimizer=optimizer_,
                   lr_schedule=schedule(optimizer_) if schedule else None, callbacks=callbacks or {}, loggers=loggers,
                   run_dir=tmp_path, placement=placement)
