"""Configs saved before the toolkit moved under the `decltrain` import package.

Run folders and checkpoints written earlier name classes by their old top-level paths
(`models.MnistCNN`, `datasets.torchvision_images.build`, `callbacks.ModelCheckpoint`,
`trainer.loggers.TensorBoardLogger`). Those paths now belong to whatever the user's environment
has under such names (Hugging Face `datasets`, a user's own `models/`), so an old path is
rewritten only when the same path under `decltrain.` names one of ours. Configs saved before
`decltrain.trainer` was split by role name the modules that moved (`MOVED`) by their flat path.
"""
from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

OLD_PACKAGES = ("trainer", "callbacks", "datasets", "models", "configs")
PACKAGE = "decltrain"
# Modules of `decltrain.trainer` a saved config can name (trainer, loss, loggers), before and after the split.
MOVED = {f"{PACKAGE}.trainer.{module}": f"{PACKAGE}.trainer.{package}.{module}" for package, module in (
    ("engine", "loop"), ("engine", "task"), ("tracking", "loggers"), ("tracking", "csv_logger"), ("tracking", "mlflow_logger"),
    ("tracking", "wandb_logger"))}
# Keys whose string values are dotted import paths.
PATH_KEYS = ("_target_", "collate_fn")


def upgrade(config: DictConfig | ListConfig) -> DictConfig | ListConfig:
    """A copy of `config` with every old import path that names one of ours rewritten."""
    return OmegaConf.create(_rewrite(OmegaConf.to_container(config, resolve=False)))


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: upgraded_path(value) if key in PATH_KEYS and isinstance(value, str) else _rewrite(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node


def upgraded_path(path: str) -> str:
    """`models.MnistCNN` -> `decltrain.models.MnistCNN` when that exists; anything else unchanged.

    `trainer.loggers.TensorBoardLogger` and `decltrain.trainer.loggers.TensorBoardLogger` both
    become `decltrain.trainer.tracking.loggers.TensorBoardLogger`.
    """
    if path.split(".", 1)[0] not in OLD_PACKAGES + (PACKAGE,):
        return path
    candidate = path if path.startswith(f"{PACKAGE}.") else f"{PACKAGE}.{path}"
    module, _, name = candidate.rpartition(".")
    module = MOVED.get(module, module)
    candidate = f"{module}.{name}"
    try:
        return candidate if hasattr(importlib.import_module(module), name) else path
    except ImportError:
        return path
