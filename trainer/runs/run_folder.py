"""A finished run folder, reopened: its saved config (plus the user's overrides) and a checkpoint;
`commands/build.trained_model` rebuilds the model and data from them. Shared by `evaluate`,
`predict` and `export-model`.

The config is `<run>/.hydra/config.yaml`, unresolved, so `${oc.env:DATA_DIR,data}` is resolved
afresh and a run trained on another machine can be evaluated here.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from decltrain.trainer.runs import layout
from decltrain.trainer.errors import UserError

REQUIRED_SECTIONS = ("seed", "model", "dataset", "loss", "trainer")
log = logging.getLogger("decltrain")


@dataclass
class RunFolder:
    path: Path
    config: DictConfig

    @classmethod
    def open(cls, run: str, overrides: list[str]) -> RunFolder:
        """Checks the folder, loads its config and applies `overrides` (`key=value`, `+key=value`, `~key`)."""
        path = Path(run)
        if not path.is_dir():
            raise UserError(f"run folder {path} does not exist; pass run=<folder written by train>, "
                            "e.g. run=outputs/mnist_cnn/<timestamp>")
        if not (path / layout.CONFIG).is_file():
            raise UserError(f"run folder {path} has no {layout.CONFIG}: it was not written by `train`; "
                            f"pass the folder that holds {layout.HYDRA}/ and {layout.CHECKPOINTS}/")
        try:
            config = OmegaConf.load(path / layout.CONFIG)
        except (OmegaConfBaseException, ValueError, OSError) as err:
            raise UserError(f"run folder {path}: {layout.CONFIG} cannot be read ({err}); "
                            "restore it from the checkpoint's `config` entry") from err
        missing = [key for key in REQUIRED_SECTIONS if not isinstance(config, DictConfig) or key not in config]
        if missing:
            raise UserError(f"run folder {path}: {layout.CONFIG} has no {', '.join(missing)}: it was written by an "
                            "incompatible config; train the run again with this version")
        # The weights come from the chosen checkpoint; a fine-tuning source the run started from
        # must not be loaded (or even exist) again. The commands run in one process: evaluation
        # shards without padding, so one process scores what a multi-device run scored, and
        # BatchNorm has no other rank to synchronise with. One pass over the data does not repay
        # compiling (which on a CPU would also need a C compiler).
        for key, value in (("init_from", None), ("devices", 1), ("sync_batchnorm", False), ("compile", False)):
            if key in config.trainer:
                config.trainer[key] = value
        _fit_to_this_machine(config.trainer)
        assert isinstance(config, DictConfig)  # a run's saved config is a mapping
        folder = cls(path, config)
        folder.apply_overrides(overrides)
        return folder

    def apply_overrides(self, overrides: list[str]) -> None:
        """Hydra's override syntax on the saved config; plain `key=value` must name an existing key."""
        try:
            parsed = OverridesParser.create().parse_overrides(overrides)
        except HydraException as err:
            raise UserError(f"cannot parse the overrides {' '.join(overrides)}: {err}") from None
        for override in parsed:
            key = override.key_or_group
            exists = OmegaConf.select(self.config, key, default=_ABSENT) is not _ABSENT
            if override.is_sweep_override():
                raise UserError(f"{override.input_line}: sweeps are for `train -m`; give one value")
            if override.is_delete():
                if not exists:
                    raise UserError(f"~{key}: the config of run {self.path} has no key `{key}`")
                parent, _, leaf = key.rpartition(".")
                (OmegaConf.select(self.config, parent) if parent else self.config).pop(leaf)
                continue
            if not exists and not (override.is_add() or override.is_force_add()):
                raise UserError(f"{override.input_line}: the config of run {self.path} has no key `{key}`; "
                                f"check the spelling, or add it with +{override.input_line}")
            if exists and override.is_add():
                raise UserError(f"{override.input_line}: `{key}` already exists in the config of run "
                                f"{self.path}; drop the +")
            value = override.value()
            if isinstance(OmegaConf.select(self.config, key, default=None), DictConfig) and not isinstance(value, dict):
                raise UserError(f"{override.input_line}: `{key}` is a section of the run's config and a run's "
                                f"groups cannot be swapped after training; override its values ({key}.NAME=...)")
            OmegaConf.update(self.config, key, value, merge=True, force_add=True)

    def checkpoint(self, ckpt: str) -> Path:
        """`best`, `last` or a file (see `layout.find_checkpoint`)."""
        return layout.find_checkpoint(ckpt, self.path, "ckpt")

    @contextlib.contextmanager
    def named_in_errors(self) -> Iterator[None]:
        """Errors while rebuilding from the run's config name the run folder."""
        try:
            yield
        except UserError as err:
            if str(self.path) in str(err):
                raise
            raise UserError(f"run folder {self.path}: {err}") from err


def _fit_to_this_machine(trainer: DictConfig) -> None:
    """A run trained on a GPU reopens on a machine without one: on the CPU, fp16 becomes fp32.

    The checkpoint loads anywhere (its tensors are mapped to the CPU); only the CUDA-only
    settings of the saved config would refuse to start. Overrides given by the user come later and win.
    """
    if torch.cuda.is_available():
        return
    changes = {key: value for key, old, value in (("accelerator", "cuda", "cpu"), ("precision", "16-mixed", "32"))
               if str(trainer.get(key)) == old}
    for key, value in changes.items():
        log.info("no CUDA device here: the run's trainer.%s=%s becomes %s", key, trainer[key], value)
        trainer[key] = value


_ABSENT = object()
