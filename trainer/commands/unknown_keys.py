"""A misspelt key on the command line gets one line with the closest keys of the config, and exit 2.

Hydra rejects `train optimizer.lrr=0.1` at composition, before any run folder exists, but with five
lines and a hint to add the key (`+optimizer.lrr=0.1`), which only fails later. Hydra 1.3 offers no
hook for a failed composition, so while the console script runs, the step that applies the
command line's overrides to the composed config is wrapped: a plain `key=value` (or `group=option`)
naming no key of the config ends the process there, naming the closest existing keys.
"""
from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from decltrain.trainer.commands.console_script import USER_ERROR_EXIT_CODE

_apply_overrides = ConfigLoaderImpl._apply_overrides_to_config


SHELL_COMPLETION_FLAGS = frozenset({"-sc", "--shell-completion"})


@contextmanager
def explained_unknown_keys(command: str) -> Iterator[None]:
    """While a Hydra app of `command` composes in this block, an unknown key ends it with one line.

    Not while the shell completes a command line: an unknown key there gives no completions, silently.
    """
    if SHELL_COMPLETION_FLAGS & set(sys.argv[1:]):
        yield
        return

    def apply_overrides(overrides: list[Override], cfg: DictConfig) -> None:
        try:
            _apply_overrides(overrides, cfg)
        except ConfigCompositionException:
            unknown = next((override for override in overrides if _names_no_key(override, cfg)), None)
            if unknown is None:
                raise
            print(f"{command}: error: {unknown_key_message(unknown.key_or_group, cfg)}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)  # not an Exception: Hydra's error report lets it through

    setattr(ConfigLoaderImpl, "_apply_overrides_to_config", staticmethod(apply_overrides))
    try:
        yield
    finally:
        setattr(ConfigLoaderImpl, "_apply_overrides_to_config", staticmethod(_apply_overrides))


def unknown_key_message(key: str, cfg: DictConfig) -> str:
    """`KEY` is not in the config, with the closest keys it has (or how to list them).

    Where the key's section exists, the closest keys of that section (`optimizer.lrr`: `optimizer.lr`);
    else the closest keys as deep as it (`optimzer`: `optimizer`, `trainr.max_epochs`: `trainer.max_epochs`).
    """
    keys = dotted_keys(cfg)
    section, _, leaf = key.rpartition(".")
    siblings = [name[len(section) + 1:] for name in keys
                if name.startswith(f"{section}.") and "." not in name[len(section) + 1:]] if section else []
    close = [f"{section}.{name}" for name in difflib.get_close_matches(leaf, siblings, n=3)] if siblings else \
        difflib.get_close_matches(key, [name for name in keys if name.count(".") == key.count(".")], n=3)
    if close:
        return f"the config has no key {key}; did you mean {' or '.join(close)}?"
    return f"the config has no key {key}; `--cfg job` prints the config's keys (+{key}=VALUE adds a new key)"


def dotted_keys(cfg: DictConfig) -> list[str]:
    """Every key of `cfg`, sections and values, as `section.key` paths (list items are not keys)."""
    def walk(node: dict[Any, Any], prefix: str) -> Iterator[str]:
        for name, value in node.items():
            yield f"{prefix}{name}"
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{name}.")

    return list(walk(cast(dict[Any, Any], OmegaConf.to_container(cfg, resolve=False)), ""))


def _names_no_key(override: Override, cfg: DictConfig) -> bool:
    """A plain override (not `+`, `++` or `~`) of a key the config lacks (read unresolved: `hydra.run.dir`
    can be resolved only once the job runs)."""
    if override.is_add() or override.is_force_add() or override.is_delete():
        return False
    return override.key_or_group not in dotted_keys(cfg)
