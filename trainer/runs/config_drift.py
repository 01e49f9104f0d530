"""A resumed run's config against the one its checkpoint was trained with.

A checkpoint stores the resolved config (YAML). Resuming with another model, data, loss, batch
size, seed or optimizer type would continue a different training from this one's state, so it
is refused with the way to start fresh instead. Every other difference (stop conditions,
logging, callbacks' patience, where the data lives) is allowed and named in a warning.
"""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from decltrain.trainer.tracking.hparams import flatten
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")

# Keys (and the sections under them) that define what is being trained.
DEFINING = ("model", "dataset", "loss", "seed", "optimizer._target_")
# Dataset keys that only say where the data is and how it is loaded: they change no sample.
LOADING = ("dataset.root", "dataset.path", "dataset.download", "dataset.num_workers", "dataset.pin_memory",
           "dataset.persistent_workers", "dataset.eval_batch_size")
IGNORED = ("resume", "rerun", "print_config")  # differs by construction; how the start is printed
SHOWN = 3  # differences shown with their values in the error


def check(saved_yaml: str, current_yaml: str, source: str) -> None:
    """Refuses a resume whose config changes what is trained; warns about other changes."""
    if not saved_yaml:  # checkpoints written outside `train` may hold no config
        return
    saved = _settings(OmegaConf.create(saved_yaml))
    current = _settings(OmegaConf.create(current_yaml))
    changed = sorted(key for key in saved.keys() | current.keys()
                     if saved.get(key, "<absent>") != current.get(key, "<absent>") and not _under(key, IGNORED))
    refused = [key for key in changed if _under(key, DEFINING) and not _under(key, LOADING)]
    if refused:
        shown = "; ".join(f"{key}: {saved.get(key, '<absent>')} -> {current.get(key, '<absent>')}"
                          for key in refused[:SHOWN])
        more = f" (and {len(refused) - SHOWN} more)" if len(refused) > SHOWN else ""
        raise UserError(f"resume={source}: this config changes what was trained ({shown}{more}); resume with "
                        f"the run's own config, or start a new run from its weights with trainer.init_from={source} "
                        "instead of resume=")
    if changed:
        log.warning("resume: continuing with changed settings: %s", ", ".join(
            f"{key} ({saved.get(key, '<absent>')} -> {current.get(key, '<absent>')})" for key in changed))


def _settings(config: DictConfig | ListConfig) -> dict[str, Any]:
    """A run's config (a mapping) as {dotted key: value}."""
    tree = OmegaConf.to_container(config)
    assert isinstance(tree, dict)
    return flatten(tree)


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)
