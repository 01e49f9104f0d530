"""The start of a run in a few lines: what tells this run apart, and where its full config is.

The full config (a hundred lines) is in `<run folder>/.hydra/config.yaml`; `print_config=full`
prints it as a tree before this summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from decltrain.trainer.console import shown_path
from decltrain.trainer.errors import UserError
from decltrain.trainer.runs import layout
from decltrain.trainer.tracking.hparams import GROUPS

# Shown beside the groups of HPARAMS (hparams.GROUPS) only when chosen; `logger` lists its loggers.
OPTIONAL_GROUPS = ("debug", "hparams_search")
PRINT_CONFIG_CHOICES = ("compact", "full")


def check_print_config(cfg: DictConfig) -> bool:
    """True when the whole config tree is to be printed (`print_config=full`)."""
    if cfg.print_config not in PRINT_CONFIG_CHOICES:
        raise UserError(f"print_config={cfg.print_config} is not one of {' | '.join(PRINT_CONFIG_CHOICES)}")
    return bool(cfg.print_config == "full")


def start_summary(cfg: DictConfig, run_dir: Path, choices: dict[str, Any], overrides: list[str],
                  model: nn.Module, callback_names: list[str]) -> dict[str, str]:
    """Label -> text: the run folder, the experiment, each group's option, the user's overrides,
    the key hyperparameters and the model's size, the callbacks, the full config's file."""
    groups = [f"{group}={choices[group]}" for group in GROUPS if choices.get(group)]
    groups += [f"{group}={choices[group]}" for group in OPTIONAL_GROUPS if choices.get(group)]
    groups.append(f"logger={','.join(str(name) for name in cfg.logger or {}) or 'none'}")
    return {
        "run folder": shown_path(run_dir),
        "experiment": str(choices.get("config")),
        "groups": " ".join(groups),
        "overrides": " ".join(overrides) or "none",
        "training": _key_hyperparameters(cfg, model),
        "callbacks": ", ".join(callback_names) or "none",
        "full config": f"{shown_path(run_dir / layout.CONFIG)} (print_config=full prints it here)",
    }


def _key_hyperparameters(cfg: DictConfig, model: nn.Module) -> str:
    """Learning rate, batch size, epochs (and a step limit) and the model's parameters, where the config has them."""
    parts = []
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    if lr is not None:
        parts.append(f"learning rate {lr:g}" if isinstance(lr, (int, float)) else f"learning rate {lr}")
    batch_size = OmegaConf.select(cfg, "dataset.batch_size", default=None)
    if batch_size is not None:
        parts.append(f"batch size {batch_size}")
    epochs = cfg.trainer.max_epochs
    parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}")
    if cfg.trainer.max_steps > 0:
        parts.append(f"at most {cfg.trainer.max_steps} steps")
    parts.append(f"{sum(parameter.numel() for parameter in model.parameters()):,} parameters")
    return ", ".join(parts)
