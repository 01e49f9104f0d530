"""Clips gradients where they are final (accumulated, all-reduced, unscaled) and logs their norm.

Under `trainer.strategy=fsdp` each rank holds a shard of every gradient (a DTensor): the norm is
the global one, over all shards, so every rank clips by the same factor.
"""
from __future__ import annotations


from collections.abc import Sequence

import torch
from torch.distributed.tensor import DTensor

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.optimizers import UNNAMED, metric_name, trained_parameters
from decltrain.trainer.errors import UserError


class GradientClipping(Callback):
    """`algorithm=norm` rescales to a total 2-norm of at most `value`; `value` clamps each element.

    With `value: null` nothing is clipped and the gradient norm is still logged on logging steps.
    A task's several optimizers are each clipped on their own before their step, and each norm is
    logged under the optimizer's name (`train/grad_norm_generator`).
    """

    def __init__(self, value: float | None = None, algorithm: str = "norm") -> None:
        if algorithm not in ("norm", "value"):
            raise UserError(f"callbacks.gradient_clipping.algorithm={algorithm!r} is not valid; use 'norm' or 'value'")
        if value is not None and value <= 0:
            raise UserError(f"callbacks.gradient_clipping.value={value} must be positive (or null for no clipping)")
        self.value = value
        self.algorithm = algorithm
        self._norms: dict[str, torch.Tensor] = {}  # measured before each step, logged after it, by metric name

    def on_before_optimizer_step(self, trainer: TrainerView) -> None:
        if self.value is None and not trainer.should_log:
            return
        name = trainer.optimizer_name
        stepped = None if name == UNNAMED else {id(param) for param in trained_parameters(trainer.optimizer)}
        params = [p for p in trainer.model.parameters() if p.grad is not None and (stepped is None or id(p) in stepped)]
        if not params:
            return
        norm = total_norm(params)  # before clipping: what the loss landscape produced
        if self.value is not None:
            if self.algorithm == "norm":
                torch.nn.utils.clip_grads_with_norm_(params, self.value, norm)
            else:
                torch.nn.utils.clip_grad_value_(params, self.value)
        if trainer.should_log:
            self._norms[metric_name("train/grad_norm", name)] = norm

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if self._norms:
            trainer.log_metrics({metric: norm.item() for metric, norm in self._norms.items()})
            self._norms = {}


def total_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together (of all shards), computed on their device without a host sync."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return norm.full_tensor() if isinstance(norm, DTensor) else norm
