"""The task contract: what is learned, as the engine asks it (and nothing else) about the objective.

A task is any object with the methods of `Task` below; the built-in ones live in trainer/tasks/,
your own is named by `task._target_` in the config. The engine hands a task the model and a
batch exactly as the loader gave it (moved to the device), so a batch may be a pair of tensors,
a dict, or lists of dicts (detection): only the task knows what is in it.

Metrics are torchmetrics objects: they accumulate over batches of unequal size and reduce their
state over DDP ranks before computing, so values cover the whole split.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torchmetrics import MetricCollection

from decltrain.trainer.errors import UserError

Loss = torch.Tensor | Mapping[str, torch.Tensor]


@runtime_checkable
class Task(Protocol):
    """The objective. Every method is called by the engine or a command; none may be left out."""

    def loss(self, model: nn.Module, batch: Any) -> Loss:
        """The training loss of one batch: runs `model` on it (in training mode, under the run's
        autocast) and returns a scalar tensor, or a dict of named scalar losses whose sum is
        optimized (each is logged as `train/loss_<name>`, the sum as `train/loss`)."""
        ...

    def metrics(self, split: str) -> MetricCollection:
        """Fresh torchmetrics for one evaluation of `split` ("val" or "test"), keyed by name
        (reported as `<split>/<name>`). Called once before training with "val" too, so monitors
        (`val/acc`) are checked at start: the names may not depend on the data seen."""
        ...

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        """Adds one evaluation batch: runs `model` on it (eval mode, no gradients, under the
        run's autocast) and updates `metrics` (the collection `metrics` returned, on the device)."""
        ...

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The computed metrics as (scalars for metrics.json and the loggers, uint8 (C, H, W)
        images for the loggers), both keyed by name without the split; runs after every rank's
        state was reduced."""
        ...

    def model_inputs(self, batch: Any) -> Any:
        """The part of a collated batch the model is called with: what `export-model` traces
        with and what `predict` feeds (its batches are collated with a dummy target)."""
        ...

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """One row per input of a batch (`model_inputs` of it) for `predict` to write: values
        that are numbers or strings go to its CSV (lists or dicts make it write JSON instead),
        a PIL image is saved as a PNG beside it. The model is in eval mode, without gradients."""
        ...

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        """Checked before training on a batch of two validation samples (model in eval mode, no
        gradients): None when the model's output fits this task, else what is wrong with its
        shapes, e.g. "outputs (2, 5) per batch, needs (2, 10): one logit per class"."""
        ...


@runtime_checkable
class Generates(Protocol):
    """A task whose model continues a prompt (`predict prompt=...`), as a language model does."""

    def generate(self, model: nn.Module, tokens: torch.Tensor, max_new_tokens: int, temperature: float,
                 top_k: int | None) -> torch.Tensor:
        """`tokens` (1, time) followed by `max_new_tokens` sampled tokens; the model is in eval mode."""
        ...


@runtime_checkable
class SeveralOptimizers(Protocol):
    """A task that trains parts of its model with optimizers of their own (a GAN: the generator and
    the discriminator). Training then calls `optimizer_loss` once per optimizer that steps, never
    `loss`; each optimizer steps before the next one's loss is computed. Runs in one process only."""

    def optimizer_parameters(self, model: nn.Module) -> dict[str, Iterable[nn.Parameter]]:
        """Each optimizer's name (its config is `optimizer.<name>`) and the parameters it steps."""
        ...

    def optimizers_at(self, step: int) -> list[str]:
        """The optimizers that step at optimizer step `step` (1-based), in the order they step,
        e.g. ["discriminator", "generator"], or the discriminator alone between generator steps."""
        ...

    def optimizer_loss(self, model: nn.Module, batch: Any, name: str) -> Loss:
        """The loss optimizer `name` descends on this batch (training mode, under the run's
        autocast), as `loss` returns one; its gradients reach `name`'s parameters only."""
        ...


@runtime_checkable
class Samples(Protocol):
    """A task whose model makes new samples from noise (`predict num_samples=64`), as a GAN's generator does."""

    def samples(self, model: nn.Module, count: int, seed: int) -> torch.Tensor:
        """A uint8 (C, H, W) grid of `count` samples drawn with `seed`; the model is in eval mode."""
        ...


REQUIRED = tuple(name for name, value in vars(Task).items() if inspect.isfunction(value))


def check_task(task: object, target: str) -> None:
    """A task without one of the contract's methods fails at start, naming the first missing one."""
    for name in REQUIRED:
        if not callable(getattr(task, name, None)):
            parameters = ", ".join(list(inspect.signature(getattr(Task, name)).parameters)[1:])
            raise UserError(f"task {target} has no method {name}({parameters}); every task needs "
                            f"{', '.join(REQUIRED)} (see docs/tasks.md)")


def total_loss(loss: Loss) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(the loss to optimize, the named parts): a dict's parts are summed, a tensor has none."""
    if isinstance(loss, torch.Tensor):
        return loss, {}
    if not loss:
        raise UserError("the task's loss returned an empty dict; return a tensor or named loss tensors")
    parts = dict(loss)
    values = iter(parts.values())
    total = next(values)
    for value in values:
        total = total + value
    return total, parts


def metric_names(task: Task, split: str) -> list[str]:
    """The scalar metrics an evaluation of `split` reports (`val/acc`, `val/loss`, ...), known before training."""
    return [f"{split}/{name}" for name in task.metrics(split).keys()]
