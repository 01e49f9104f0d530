"""What the tasks trained on (inputs, targets) pairs share: the model maps inputs to outputs, a loss module compares them."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Supervised:
    """Batches of (inputs, targets); `align` fits the model's outputs and the targets to the loss."""

    def __init__(self, loss: nn.Module) -> None:
        self.loss_fn = loss

    def align(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, targets

    def outputs(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, targets) of one batch, aligned; evaluation outputs are float32 (autocast may give bf16)."""
        inputs, targets = batch
        outputs = model(inputs)
        return self.align(outputs if model.training else outputs.float(), targets)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.loss_fn(*self.outputs(model, batch))

    def model_inputs(self, batch: Any) -> Any:
        return batch[0]


def scalars(computed: dict[str, torch.Tensor]) -> dict[str, float]:
    """The single-valued metrics, the loss last (as metrics.json has always listed it)."""
    values = {name: float(value) for name, value in computed.items() if value.dim() == 0 and name != "loss"}
    return {**values, "loss": float(computed["loss"])} if "loss" in computed else values


def squeeze_single(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One value per sample (binary, regression): the model outputs (N, 1), the targets are (N,) floats."""
    if outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1:
        outputs = outputs.squeeze(-1)
    return outputs, targets.to(outputs.dtype)


def width_mismatch(outputs: Any, expected: int, what: str) -> str | None:
    """None when `outputs` is a tensor of `expected` values per sample, else what it is instead."""
    if not isinstance(outputs, torch.Tensor):
        return f"outputs a {type(outputs).__name__}, needs a tensor of shape (batch, {expected}): {what}"
    if outputs.dim() < 2 or outputs.shape[-1] != expected:
        return f"outputs shape {tuple(outputs.shape)}, needs (batch, {expected}): {what}"
    return None
