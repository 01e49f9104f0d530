"""The values that tell runs apart, for TensorBoard's HPARAMS tab (and the other loggers' summaries).

The full config has a hundred keys, class paths (`_target_`) among them, and the few values
that differ between runs drown in it. Kept here: the experiment, the option picked in each group
(`optimizer: adam`), a short list of key hyperparameters, and every value the user overrode on
the command line.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GROUPS = ("model", "dataset", "loss", "optimizer", "scheduler", "trainer", "callbacks")
# Shown for every run, whatever was overridden.
KEY_HYPERPARAMETERS = ("seed", "optimizer.lr", "optimizer.weight_decay", "dataset.batch_size", "trainer.max_epochs",
                       "trainer.precision", "trainer.accumulate_grad_batches")
# Overrides that choose where or how the run happens, not what it learns.
_NOT_HYPERPARAMETERS = ("hydra", "resume", "rerun", "hparams_search", "logger", "print_config")


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 1e-3}} -> {'optimizer.lr': 1e-3}; an empty dict stays a value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def select(config: dict[str, Any], overrides: list[str], choices: dict[str, Any]) -> dict[str, Any]:
    """`config` resolved and nested; `overrides` as typed (`optimizer.lr=3e-4`); `choices` the
    group options Hydra picked (`hydra.runtime.choices`)."""
    everything = flatten(config)
    picked: dict[str, Any] = {"config": choices.get("config")}
    picked.update({group: choices.get(group) for group in GROUPS})
    picked.update({key: everything.get(key) for key in KEY_HYPERPARAMETERS})
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0].split("/")[0] in _NOT_HYPERPARAMETERS:
            continue
        if key in everything:
            picked[key] = "null" if everything[key] is None else everything[key]
        elif key in choices:
            picked[key] = choices[key]
        else:  # a whole subtree (callbacks.early_stopping=null): its leaves
            picked.update({name: value for name, value in everything.items()
                           if name.startswith(f"{key}.") and not _is_internal(name)})
    return {key: value for key, value in picked.items() if value is not None}


def _is_internal(key: str) -> bool:
    """Hydra's own keys (`_target_`, `_partial_`, ...): class paths, not hyperparameters."""
    return any(part.startswith("_") for part in key.split("."))
