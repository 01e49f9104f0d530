"""The `evaluate`, `predict` and `export-model` console scripts: Hydra apps on a finished run folder.

Each command owns the few keys of its primary config (configs/evaluate.yaml, predict.yaml,
export.yaml); every other `key=value` on the command line overrides the run's saved config
(`dataset.batch_size=256`) and is handed to the command as text, since the run's config is only
known once `run=` is read. This module imports no torch, so `--help` answers quickly.
"""
from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer.commands import console_script
from decltrain.trainer.commands.console_script import FLAGS_WITH_VALUE
from decltrain.trainer.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
log = logging.getLogger("decltrain")


def split_overrides(args: list[str], own_keys: set[str]) -> tuple[list[str], list[str]]:
    """Splits command-line arguments into Hydra's (flags, the command's keys) and the run's overrides."""
    for_hydra: list[str] = []
    for_run: list[str] = []
    value_expected = False
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        is_override = ("=" in arg or arg.startswith("~")) and not arg.startswith("-")
        if is_override and not value_expected:
            arg = _quote_value(arg)
        if value_expected or not is_override or key.split(".")[0] in own_keys | {"hydra"}:
            for_hydra.append(arg)
        else:
            for_run.append(arg)
        value_expected = arg in FLAGS_WITH_VALUE
    return for_hydra, for_run


def _quote_value(arg: str) -> str:
    """`ckpt=epoch=3-step=120.ckpt` -> `ckpt='epoch=3-step=120.ckpt'`: Hydra's grammar wants `=` quoted."""
    key, _, value = arg.partition("=")
    if "=" not in value or "'" in value or value[:1] == '"':
        return arg
    return f"{key}='{value}'"


def _command(config_name: str, module: str) -> Callable[[], None]:
    """A console-script entry point: Hydra composes `config_name`, `module.main(cfg, overrides)` runs."""

    def entry_point() -> None:
        console_script.sleeping_openmp_threads()  # as for `train`: a CPU pass on shared cores
        console_script.importable_working_directory()  # a run of the user's own model rebuilds it
        own_keys = {str(key) for key in OmegaConf.load(CONFIGS / f"{config_name}.yaml")} - {"defaults", "hydra"}
        sys.argv[1:], run_overrides = split_overrides(sys.argv[1:], own_keys)

        @hydra.main(version_base="1.3", config_path="../../configs", config_name=config_name)
        def app(cfg: DictConfig) -> None:
            try:
                missing = sorted(OmegaConf.missing_keys(cfg))
                if missing:
                    raise UserError(f"{config_name} needs {' and '.join(f'{key}=...' for key in missing)}; "
                                    f"see {Path(sys.argv[0]).name} --help")
                with console_script.frozen_imports():
                    command = importlib.import_module(module)
                command.main(cfg, run_overrides)
            except UserError as err:
                log.error("error: %s", err)
                sys.exit(console_script.USER_ERROR_EXIT_CODE)

        app()

    return entry_point


evaluate = _command("evaluate", "decltrain.trainer.commands.evaluate")
predict = _command("predict", "decltrain.trainer.commands.predict")
export_model = _command("export", "decltrain.trainer.commands.export")
