"""What is learned: the loss, and the metrics that fit the dataset's kind of task.

Metrics are torchmetrics objects: they accumulate over batches of unequal size and reduce
their state over DDP ranks before computing, so values cover the whole split.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy, BinaryConfusionMatrix, BinaryF1Score, BinaryPrecision, BinaryRecall,
    MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score, MulticlassPrecision, MulticlassRecall,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from decltrain.trainer.engine.confusion import confusion_image
from decltrain.trainer.errors import UserError

TASKS = ("multiclass", "binary", "regression")


class ClassificationLoss(nn.Module):
    """Cross-entropy for whichever head the data gave: one logit (binary) or one per class."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.shape == targets.shape:  # binary: `Task` squeezed the logit, targets are floats
            return nn.functional.binary_cross_entropy_with_logits(outputs, targets)
        return nn.functional.cross_entropy(outputs, targets)


class Task:
    def __init__(self, loss_fn: nn.Module, kind: str, num_classes: int) -> None:
        if kind not in TASKS:
            raise UserError(f"dataset task {kind!r} is unknown; expected one of {', '.join(TASKS)}")
        self.loss_fn = loss_fn
        self.kind = kind
        self.num_classes = num_classes

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs, targets = self._align(outputs, targets)
        return self.loss_fn(outputs, targets)

    def _align(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary and regression heads output (N, 1); their targets are (N,) floats."""
        if self.kind != "multiclass":
            if outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1:
                outputs = outputs.squeeze(-1)
            targets = targets.to(outputs.dtype)
        return outputs, targets

    def metric_names(self, split: str) -> list[str]:
        """The scalar metrics an evaluation of `split` reports (`val/acc`, `val/loss`, ...), known before training."""
        return [f"{split}/{name}" for name in (*self.metrics(torch.device("cpu")).keys(), "loss")]

    def metrics(self, device: torch.device, confusion_matrix: bool = False) -> MetricCollection:
        """A fresh set of metrics for one evaluation pass (the loss is averaged separately, per sample).

        `confusion_matrix` adds the (classes x classes) count matrix, which `summarize` turns
        into an image; the trainer asks for it at test.
        """
        if self.kind == "multiclass":
            classes = self.num_classes
            named: dict[str, Metric | MetricCollection] = {
                "acc": MulticlassAccuracy(classes, average="micro", validate_args=False),
                "precision": MulticlassPrecision(classes, average="macro", validate_args=False),
                "recall": MulticlassRecall(classes, average="macro", validate_args=False),
                "f1": MulticlassF1Score(classes, average="macro", validate_args=False),
            }
        elif self.kind == "binary":
            named = {"acc": BinaryAccuracy(validate_args=False), "precision": BinaryPrecision(validate_args=False),
                     "recall": BinaryRecall(validate_args=False), "f1": BinaryF1Score(validate_args=False)}
        else:
            named = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
        if confusion_matrix and self.kind == "multiclass":
            named["confusion_matrix"] = MulticlassConfusionMatrix(self.num_classes, validate_args=False)
        elif confusion_matrix and self.kind == "binary":
            named["confusion_matrix"] = BinaryConfusionMatrix(validate_args=False)
        return MetricCollection(named).to(device)

    @staticmethod
    def summarize(computed: dict[str, torch.Tensor],
                  class_names: Sequence[str]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Computed metrics split into scalars (for metrics.json) and images (the confusion matrix)."""
        scalars = {name: float(value) for name, value in computed.items() if value.dim() == 0}
        images = {}
        if "confusion_matrix" in computed:
            images["confusion_matrix"] = confusion_image(computed["confusion_matrix"], class_names)
        return scalars, images

    def update(self, metrics: MetricCollection, loss_meter: MeanMetric, outputs: torch.Tensor,
               targets: torch.Tensor) -> None:
        """Adds one batch to the metrics; the loss is weighted by the batch size."""
        outputs, targets = self._align(outputs, targets)
        loss_meter.update(self.loss_fn(outputs, targets).detach(), weight=targets.shape[0])
        if self.kind == "multiclass":
            metrics.update(outputs.argmax(dim=-1), targets)
        elif self.kind == "binary":
            metrics.update(torch.sigmoid(outputs), targets.long())
        else:
            metrics.update(outputs, targets)
