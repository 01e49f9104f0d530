"""Names of a run's optimizers: one unnamed optimizer, or several a task names (trainer/engine/task.py).

A run with one optimizer keeps it under `UNNAMED`, and its metrics carry no name (`train/lr`,
`train/grad_norm`); a task with several (`SeveralOptimizers`) names each, as its config key
`optimizer.<name>` does, and each metric carries the name (`train/lr_generator`).
"""
from __future__ import annotations

import torch

UNNAMED = ""  # the key of a run's only optimizer


def metric_name(metric: str, optimizer_name: str) -> str:
    """`metric` for one optimizer: as it is for the only one, `<metric>_<name>` for a named one."""
    return metric if optimizer_name == UNNAMED else f"{metric}_{optimizer_name}"


def trained_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters `optimizer` steps that take gradients now (frozen ones are left out)."""
    return [param for group in optimizer.param_groups for param in group["params"] if param.requires_grad]
