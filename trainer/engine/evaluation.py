"""The metric loop: a model over an evaluation loader, reduced over every rank.

Needs no optimizer and no Trainer: validation, test and the `evaluate` command all score a
model through here, so their numbers agree on the same checkpoint and split.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from decltrain.trainer.engine import checkpoint, data, distributed
from decltrain.trainer.engine.placement import Placement
from decltrain.trainer.engine.task import Task


@torch.no_grad()
def evaluate(model: nn.Module, loader: data.Loader, task: Task, split: str, *, placement: Placement,
             limit: int | float | None, before_batch: Callable[[], None] | None = None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """(scalars keyed `split/name`, images keyed `split/name`) of `model` over `loader`.

    Every rank runs its own shard (no padding) and the metrics are reduced over all of them;
    rank 0's buffers (BatchNorm statistics) are given to every rank first. `before_batch` runs
    before each batch (the Trainer acts on stop signals there).
    """
    model.eval()
    distributed.broadcast_buffers(checkpoint.unwrap(model))
    metrics = task.metrics(split).to(placement.device)
    count = data.num_batches(loader, limit)
    extra_forwards = placement.forwards_to_match(count)  # a collective under FSDP: before any forward
    for index, batch in enumerate(loader):
        if index >= count:
            break
        if before_batch is not None:
            before_batch()
        with placement.precision.autocast():
            placed = placement.batch(batch)
            task.update(metrics, model, placed)
    if extra_forwards:  # their outputs go to metrics that are never read
        unused = task.metrics(split).to(placement.device)
        for _ in range(extra_forwards):
            with placement.precision.autocast():
                task.update(unused, model, placed)
    scalars, images = task.summarize(metrics.compute())
    return ({f"{split}/{name}": value for name, value in scalars.items()},
            {f"{split}/{name}": image for name, image in images.items()})
