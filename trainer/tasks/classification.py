"""Classification: one class per sample (multiclass, or binary with one logit) or several labels per sample (multilabel).

The kind comes from the dataset (`DataSplits.task`). Multilabel targets are (N, labels) floats
of 0/1; the loss is binary cross-entropy per label (`loss=bce_with_logits` or
`loss=classification`), and the metrics are macro means over labels, plus F1 and average
precision per label (`f1_<label>`, `map_<label>` in metrics.json).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy, BinaryConfusionMatrix, BinaryF1Score, BinaryPrecision, BinaryRecall,
    MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score, MulticlassPrecision, MulticlassRecall,
    MultilabelAccuracy, MultilabelAveragePrecision, MultilabelF1Score,
)

from decltrain.trainer.engine.confusion import confusion_image
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.supervised import Supervised, scalars, squeeze_single, width_mismatch

KINDS = ("multiclass", "binary", "multilabel")
PER_LABEL = {"f1_per_label": "f1", "map_per_label": "map"}  # vector metric -> prefix of its per-label scalars


class ClassificationLoss(nn.Module):
    """Cross-entropy for whichever head the data gave: one logit per class, or one per label / one for binary (BCE)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.shape == targets.shape:  # binary (the logit squeezed) or multilabel: float targets
            return nn.functional.binary_cross_entropy_with_logits(outputs, targets)
        return nn.functional.cross_entropy(outputs, targets)


class Classification(Supervised):
    def __init__(self, loss: nn.Module, kind: str, num_classes: int, class_names: Sequence[str] = ()) -> None:
        if kind not in KINDS:
            raise UserError(f"task=classification needs class targets but the dataset gives {kind} ones; "
                            f"use task={kind} or a dataset with {', '.join(KINDS)} targets")
        if kind == "multilabel" and isinstance(loss, nn.CrossEntropyLoss):
            raise UserError("multilabel targets need a loss per label: set loss=bce_with_logits or "
                            "loss=classification (cross-entropy picks one class per sample)")
        super().__init__(loss)
        self.kind = kind
        self.num_classes = num_classes
        self.class_names = list(class_names) or [str(index) for index in range(num_classes)]

    def align(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "binary":
            return squeeze_single(outputs, targets)
        if self.kind == "multilabel":
            return outputs, targets.to(outputs.dtype)
        return outputs, targets

    def metrics(self, split: str) -> MetricCollection:
        """Accuracy, precision, recall and F1 (macro over classes; multilabel: accuracy, F1 and
        mAP, macro, and per label); the confusion matrix at test; the loss, averaged per sample."""
        classes = self.num_classes
        named: dict[str, Metric]
        if self.kind == "multiclass":
            named = {"acc": MulticlassAccuracy(classes, average="micro", validate_args=False),
                     "precision": MulticlassPrecision(classes, average="macro", validate_args=False),
                     "recall": MulticlassRecall(classes, average="macro", validate_args=False),
                     "f1": MulticlassF1Score(classes, average="macro", validate_args=False)}
            if split == "test":
                named["confusion_matrix"] = MulticlassConfusionMatrix(classes, validate_args=False)
        elif self.kind == "binary":
            named = {"acc": BinaryAccuracy(validate_args=False), "precision": BinaryPrecision(validate_args=False),
                     "recall": BinaryRecall(validate_args=False), "f1": BinaryF1Score(validate_args=False)}
            if split == "test":
                named["confusion_matrix"] = BinaryConfusionMatrix(validate_args=False)
        else:
            named = {"acc": MultilabelAccuracy(classes, average="macro", validate_args=False),
                     "f1": MultilabelF1Score(classes, average="macro", validate_args=False),
                     "map": MultilabelAveragePrecision(classes, average="macro", validate_args=False),
                     "f1_per_label": MultilabelF1Score(classes, average="none", validate_args=False),
                     "map_per_label": MultilabelAveragePrecision(classes, average="none", validate_args=False)}
        return MetricCollection({**named, "loss": MeanMetric()}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        outputs, targets = self.outputs(model, batch)
        metrics["loss"].update(self.loss_fn(outputs, targets).detach(), weight=targets.shape[0])
        if self.kind == "multiclass":
            scores, labels = outputs.argmax(dim=-1), targets
        else:  # binary, multilabel: a probability per logit, 0/1 targets
            scores, labels = torch.sigmoid(outputs), targets.long()
        for name, metric in metrics.items():
            if name != "loss":
                metric.update(scores, labels)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Scalars; per-label vectors as one scalar per label (`f1_<label>`); the confusion matrix as an image."""
        values = scalars(computed)
        for name, prefix in PER_LABEL.items():
            if name in computed:
                values.update({f"{prefix}_{label}": float(value)
                                for label, value in zip(self.class_names, computed[name])})
        images = {}
        if "confusion_matrix" in computed:
            images["confusion_matrix"] = confusion_image(computed["confusion_matrix"], self.class_names)
        return values, images

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        expected = 1 if self.kind == "binary" else self.num_classes
        unit = {"binary": "one logit", "multiclass": "one logit per class", "multilabel": "one logit per label"}
        return width_mismatch(model(self.model_inputs(batch)), expected,
                              f"{unit[self.kind]} ({self.kind}); do not set model.num_classes by hand")

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """The class (index, name) and its probability; multilabel: the labels above 0.5 and each one's probability."""
        outputs = model(inputs).float()
        names = self.class_names
        if self.kind == "multilabel":
            probabilities = torch.sigmoid(outputs)
            return [{"labels": ";".join(name for name, p in zip(names, row) if p > 0.5),
                     **{f"p_{name}": round(p, 6) for name, p in zip(names, row.tolist())}} for row in probabilities]
        if self.kind == "binary":
            positive = torch.sigmoid(outputs.reshape(len(outputs), -1)[:, 0])
            indices = (positive > 0.5).long()
            probabilities = torch.where(indices == 1, positive, 1 - positive)
        else:
            probabilities, indices = outputs.softmax(dim=-1).max(dim=-1)
        return [{"class_index": index, "class_name": names[index] if index < len(names) else str(index),
                 "probability": round(probability, 6)}
                for index, probability in zip(indices.tolist(), probabilities.tolist())]
