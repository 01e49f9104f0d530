"""One config composition per console-script run, where Hydra 1.3 does two.

Hydra's `_run_hydra` first calls `Hydra.get_mode`, which composes the whole config (in MULTIRUN
mode, sweep checks off) only to read `hydra.mode`, and then `Hydra.run` or `Hydra.multirun`
composes it again (hydra-ecosystem/hydra#3440): 0.1 to 0.3 s of every start. The mode cannot be
read from the command line alone, since a config file (the primary one or a group's, such as an
experiment) may set `hydra.mode: MULTIRUN`; so the first composition stays and the second reuses
it when the result is provably the same:

* The first composition is done as `run` would do it (RUN mode, with Hydra's sweep checks), or,
  where that fails, as `multirun` would (MULTIRUN mode, with its checks). Composition depends on
  the run mode in exactly two places: RUN mode rejects sweep overrides (`a=1,2`) and mandatory
  defaults left missing (`???`), which MULTIRUN mode accepts and skips. So a RUN composition that
  succeeds equals the MULTIRUN one, and either gives the `hydra.mode` Hydra's MULTIRUN composition
  gives. Where both fail, Hydra's own `get_mode` answers: Hydra's path and Hydra's error, unchanged
  (an error pays up to two compositions more; a sweep's RUN attempt stops at the sweep check).
* The next composition of the same Hydra instance (that of `run` or `multirun`) gets the config
  when its config name is the same, its mode is MULTIRUN or the first's, and its overrides are the
  same list, possibly followed by the `hydra.mode=RUN|MULTIRUN` that `_run_app` appends. Such a
  trailing override is applied to the reused config as composition applies command-line
  overrides (after all defaults) and recorded in `hydra.overrides.hydra`, as composition records
  it. Anything else composes anew.

`--help`, `--cfg`, `--info` and shell completion never call `get_mode`, so they are untouched.
Tested in tests/test_startup.py against every dispatch case; written for hydra-core 1.3
(pyproject pins `<1.4`).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig

_hydra_get_mode = Hydra.get_mode


@contextmanager
def composing_once() -> Iterator[None]:
    """While a Hydra app runs in this block, its config is composed once (see the module's docstring)."""
    Hydra.get_mode = _get_mode  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = _hydra_get_mode  # type: ignore[method-assign]


def _get_mode(self: Hydra, config_name: str | None, overrides: list[str]) -> Any:
    loader = self.config_loader
    for run_mode in (RunMode.RUN, RunMode.MULTIRUN):
        try:
            cfg = loader.load_configuration(config_name=config_name, overrides=overrides, run_mode=run_mode)
        except Exception:
            continue
        # `_run_app` extends `overrides` in place, so keep what was composed.
        setattr(loader, "load_configuration", _reusing(loader, config_name, list(overrides), run_mode, cfg))
        return cfg.hydra.mode
    return _hydra_get_mode(self, config_name, overrides)


def _reusing(loader: Any, composed_name: str | None, composed: list[str], composed_mode: RunMode,
             cfg: DictConfig) -> Any:
    """The loader's `load_configuration` for its next call only: `cfg` again where that is the same."""

    def load_configuration(config_name: str | None, overrides: list[str], run_mode: RunMode,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        delattr(loader, "load_configuration")  # back to the class's method for every later call
        same = config_name == composed_name and run_mode in (composed_mode, RunMode.MULTIRUN)
        trailing = _trailing_modes(overrides, composed) if same else None
        if trailing is None:
            return loader.load_configuration(config_name=config_name, overrides=overrides, run_mode=run_mode,
                                             from_shell=from_shell, validate_sweep_overrides=validate_sweep_overrides)
        ConfigLoaderImpl._apply_overrides_to_config(trailing, cfg)
        cfg.hydra.overrides.hydra.extend([override.input_line for override in trailing])
        return cfg

    return load_configuration


def _trailing_modes(overrides: list[str], composed: list[str]) -> list[Any] | None:
    """The parsed `hydra.mode=...` overrides that follow `composed` in `overrides`; None if they differ otherwise."""
    if overrides[:len(composed)] != composed:
        return None
    trailing = OverridesParser.create().parse_overrides(overrides[len(composed):])
    plain_mode = all(override.key_or_group == "hydra.mode" and override.package is None
                     and not override.is_sweep_override() and not override.is_delete()
                     and not override.is_add() and not override.is_force_add() for override in trailing)
    return trailing if plain_mode else None
