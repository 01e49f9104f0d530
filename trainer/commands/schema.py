"""Typed schema of the primary config, so Hydra rejects a wrong type at composition time.

`train trainer.max_epochs=abc` fails with the key and the expected type before any work starts.
The `trainer` section is derived from `TrainerSettings` (trainer/engine/settings.py), where each
setting is declared once, with its default and what it means. Groups whose content varies by
option (model, dataset, ...) stay untyped (`Any`).
"""
from __future__ import annotations

import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, make_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from decltrain.trainer.engine.settings import ACCELERATORS, STRATEGIES, TrainerSettings

TOP_LEVEL = ("seed",)  # settings that are top-level keys of the config, not `trainer.*`
# Settings with a few fixed choices: a wrong one fails at composition, listing them. Module-level
# names, so that composed configs pickle (the parallel launcher sends them to its worker processes).
Accelerator = Enum("Accelerator", {choice: choice for choice in ACCELERATORS}, type=str,  # type: ignore[misc]  # members from settings
                   module=__name__)
Strategy = Enum("Strategy", {choice: choice for choice in STRATEGIES}, type=str,  # type: ignore[misc]
                module=__name__)
CHOICES: dict[str, type[Enum]] = {"accelerator": Accelerator, "strategy": Strategy}


def config_type(name: str, annotation: Any) -> Any:
    """The type OmegaConf checks `trainer.<name>` against: the setting's own, an enum of its choices,
    or `Any` for a union OmegaConf cannot check (it takes only `Optional[X]`), such as
    `int | float | None`; TrainerSettings checks those when it is made."""
    if name in CHOICES:
        return CHOICES[name]
    if isinstance(annotation, types.UnionType):
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        return Optional[options[0]] if len(options) == 1 else Any
    return annotation


def _default(setting: Field[Any]) -> Any:
    if setting.default_factory is not MISSING:
        return field(default_factory=setting.default_factory)
    return field(default=setting.default)


def trainer_schema() -> type:
    """A dataclass of TrainerSettings' fields (less TOP_LEVEL) with the types OmegaConf can check."""
    hints = typing.get_type_hints(TrainerSettings)
    schema = make_dataclass("TrainerSchema", [(setting.name, config_type(setting.name, hints[setting.name]),
                                               _default(setting))
                                              for setting in fields(TrainerSettings) if setting.name not in TOP_LEVEL])
    schema.__module__ = __name__  # found by name when a config is unpickled (see CHOICES)
    return schema


TrainerSchema = trainer_schema()


@dataclass
class TrainSchema:
    seed: int = TrainerSettings.seed  # declared with the trainer settings, which use it
    resume: Optional[str] = None  # checkpoint file, run folder, "latest", or "auto"
    rerun: Optional[str] = None  # a run folder whose experiment and overrides this new run repeats
    print_config: str = "compact"  # compact | full: the whole config tree at the start too
    model: Any = None
    dataset: Any = None
    loss: Any = None
    task: Any = None  # what is learned (configs/task/, or your own `task._target_`)
    optimizer: Any = None
    scheduler: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)  # type: ignore[valid-type]  # made at import
    callbacks: Optional[dict[str, Any]] = None
    logger: Optional[dict[str, Any]] = None
    lr_find: Any = None  # find-lr's settings (configs/find_lr.yaml)
    batch_size_find: Any = None  # find-batch-size's settings (configs/find_batch_size.yaml)


def register() -> None:
    """Makes `train_schema` available to the defaults list of configs/train.yaml."""
    ConfigStore.instance().store(name="train_schema", node=TrainSchema)
