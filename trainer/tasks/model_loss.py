"""The model computes its own loss: it takes the whole batch and returns the loss.

As Hugging Face `transformers` models do (`model(**batch).loss`: a dict batch is passed as
keyword arguments, any other batch as one argument), the model returns a tensor, a dict with
`loss`, or an object with `.loss`. Evaluation reports the loss, averaged per sample, and the
torchmetrics of `task.metrics` (`{name: metric}` in the config), each updated with the model's
whole output and the batch: `metric.update(outputs, batch)`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torchmetrics import MeanMetric, Metric, MetricCollection

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.supervised import scalars

LOSS = "loss"


class ModelLoss:
    def __init__(self, metrics: Mapping[str, Metric] | None = None) -> None:
        self.extra_metrics = dict(metrics or {})
        if LOSS in self.extra_metrics:
            raise UserError("task.metrics.loss: the name `loss` is the model's loss; name the metric otherwise")

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The model on the batch: a dict batch as keyword arguments (as `transformers` models take it)."""
        return model(**batch) if isinstance(batch, Mapping) else model(batch)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return loss_of(self.forward(model, batch))

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({**{name: metric.clone() for name, metric in self.extra_metrics.items()},
                                 LOSS: MeanMetric()}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        outputs = self.forward(model, batch)
        metrics[LOSS].update(loss_of(outputs).detach().float(), weight=batch_size(batch))
        for name in self.extra_metrics:
            metrics[name].update(outputs, batch)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return scalars(computed), {}

    def model_inputs(self, batch: Any) -> Any:
        return batch

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        raise UserError("task=model_loss has no predictions to write: the model returns its loss; use a task "
                        "that says what the model predicts")

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        try:
            loss = loss_of(self.forward(model, batch))
        except TypeError as err:
            return str(err)
        if loss.dim() != 0:
            return f"returns a loss of shape {tuple(loss.shape)}, needs a single value"
        return None


def loss_of(outputs: Any) -> torch.Tensor:
    """The loss in what the model returned: the tensor, its `loss` entry, or its `.loss` attribute."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    loss = outputs.get(LOSS) if isinstance(outputs, Mapping) else getattr(outputs, LOSS, None)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"returns a {type(outputs).__name__} without a loss; task=model_loss needs a tensor, "
                        "a dict with `loss` or an object with `.loss`")
    return loss


def batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (the loss is averaged per sample)."""
    return next((leaf.shape[0] for leaf in tree_leaves(batch) if isinstance(leaf, torch.Tensor) and leaf.dim() > 0), 1)
