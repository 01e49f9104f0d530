"""The model table printed when fit starts: modules to `max_depth`, their output shapes and parameters.

Output shapes come from one forward pass over two validation samples (the model's inputs in
them, as the task picks them), with hooks on every module (eval mode, no gradient, the RNG left
as it was). Depth 1 lists the top-level children;
deeper levels are indented under their parents; `max_depth: -1` shows every module.
"""
from __future__ import annotations

from typing import Any

import torch
from rich.table import Table
from torch import nn
from torch.utils.data import default_collate

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.checkpoint import unwrap
from decltrain.trainer.engine.placement import to_device
from decltrain.trainer.engine.task import Task


class ModelSummary(Callback):
    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: TrainerView) -> None:
        # On every rank: a sharded model's forward gathers its parameters with all ranks.
        table = summary_table(unwrap(trainer.model), self.max_depth, trainer.task, trainer.splits, trainer.device)
        if trainer.is_global_zero:
            from decltrain.trainer.console import console

            console.print(table)


def _shape(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return str(list(output.shape))
    if isinstance(output, (list, tuple)):
        return ", ".join(_shape(item) for item in output)
    return "?"


def output_shapes(model: nn.Module, task: Task, splits: Any, device: torch.device) -> dict[str, str]:
    """Each module's output shape on a batch of two validation samples (first call only)."""
    shapes: dict[str, str] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:  # returns None: the output stays
            shapes.setdefault(name, _shape(output))
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()]
    collate = splits.loader.collate_fn or default_collate
    inputs = to_device(task.model_inputs(collate([splits.val[i] for i in range(min(2, len(splits.val)))])), device)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model(inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes


def summary_table(model: nn.Module, max_depth: int, task: Task, splits: Any, device: torch.device) -> Table:
    shapes = output_shapes(model, task, splits, device)
    table = Table(title=f"model: {type(model).__name__}")
    for column in ("module", "type", "output shape", "parameters", "trainable"):
        table.add_column(column, justify="right" if column in ("parameters", "trainable") else "left")
    for name, module in model.named_modules():
        depth = name.count(".") + 1
        if not name or (max_depth >= 0 and depth > max_depth):
            continue
        params = list(module.parameters())
        table.add_row("  " * (depth - 1) + name.rsplit(".", 1)[-1], type(module).__name__, shapes.get(name, "-"),
                      f"{sum(p.numel() for p in params):,}", f"{sum(p.numel() for p in params if p.requires_grad):,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table.add_section()
    table.add_row("total", "", shapes.get("", "-"), f"{total:,}", f"{trainable:,}")
    return table
