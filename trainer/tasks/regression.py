"""Regression: one value per sample, scored by mean squared and mean absolute error."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.supervised import Supervised, scalars, squeeze_single, width_mismatch


class Regression(Supervised):
    def __init__(self, loss: nn.Module, kind: str = "regression") -> None:
        if kind != "regression":
            raise UserError(f"task=regression needs numeric targets but the dataset gives {kind} ones; "
                            "use task=classification, or set dataset.task=regression")
        super().__init__(loss)

    def align(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze_single(outputs, targets)

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "loss": MeanMetric()},
                                compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        outputs, targets = self.outputs(model, batch)
        metrics["loss"].update(self.loss_fn(outputs, targets).detach(), weight=targets.shape[0])
        metrics["mse"].update(outputs, targets)
        metrics["mae"].update(outputs, targets)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return scalars(computed), {}

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        return width_mismatch(model(self.model_inputs(batch)), 1, "one value per sample (regression)")

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        outputs = model(inputs).float()
        return [{"value": value} for value in outputs.reshape(len(outputs), -1)[:, 0].tolist()]
