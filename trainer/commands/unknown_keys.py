"""A misspelt key on the command line: one line naming it and the closest keys that exist, exit 2.

The same for a config name that does not exist (`optimizer=sgdd`) and a value of the wrong type
(`trainer.max_epochs=abc`): one line each, exit 2, as for every other user error.

Hydra reports `train optimizer.lrr=0.1` in five lines that end in a hint to add the key with `+`,
which then fails later, once Adam is given an argument it does not take. With HYDRA_FULL_ERROR
set (Hydra's documented switch) a Hydra app raises its errors instead of printing them and
exiting, so `explained_composition_errors` sets it around the app, explains an unknown key
itself, and prints every other Hydra error the way Hydra would. The suggestions come from the
config composed without the unknown keys, through Hydra's public Compose API, only after a
failure: a correct command line composes once, as before.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from decltrain.trainer.commands.console_script import FLAGS_WITH_VALUE, USER_ERROR_EXIT_CODE
from decltrain.trainer.errors import first_line

CONFIG_MODULE = "decltrain.configs"
FULL_ERROR = "HYDRA_FULL_ERROR"
SIMILAR = 0.75  # difflib's similarity ratio from which a key is suggested
NEAR_TIE = 0.1


@contextmanager
def explained_composition_errors(command: str, config_name: str) -> Iterator[None]:
    """Runs the Hydra app of `command` (composing `config_name`) with its composition errors as one line.

    A user who set HYDRA_FULL_ERROR asked for Hydra's own traces and gets them unchanged.
    """
    if os.environ.get(FULL_ERROR):
        yield
        return
    os.environ[FULL_ERROR] = "1"
    try:
        yield
    except MissingConfigException as err:
        if not err.options or not err.missing_cfg_file:
            _exit_as_hydra_does(err)
        print(f"{command}: {unknown_option_message(err.missing_cfg_file, err.options)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except ConfigCompositionException as err:
        missing = _unknown_key(err)
        if missing is not None:
            message = unknown_keys_message(config_name, _overrides(sys.argv[1:]), missing)
        elif isinstance(err.__cause__, OmegaConfBaseException):  # a value of the wrong type, mostly
            message = f"{first_line(err)}: {first_line(err.__cause__)}"
        else:
            _exit_as_hydra_does(err)
        print(f"{command}: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except CompactHydraException as err:
        _exit_as_hydra_does(err)
    finally:
        os.environ.pop(FULL_ERROR, None)


def unknown_keys_message(config_name: str, overrides: list[str], missing: str) -> str:
    """Names each overridden key the config lacks (`missing` is the first Hydra found), with the
    closest keys the config has.

    The config is composed again without each unknown key in turn, since the other overrides may
    hold more; a sweep (`-m optimizer.lrr=0.1,0.2`) without its swept values, since the keys are
    what is compared and the Compose API composes one job.
    """
    parser = OverridesParser.create()
    parsed = {override: parser.parse_overrides([override])[0] for override in overrides}
    unknown: dict[str, str] = {}  # override -> its key
    cfg: DictConfig | None = None
    section: str | None = missing
    while section is not None:
        culprits = {o: str(p.key_or_group) for o, p in parsed.items() if _within(str(p.key_or_group), section)}
        if not culprits.keys() - unknown.keys():
            break  # another error hides the rest of the config: the keys are named without suggestions
        unknown.update(culprits)
        try:
            cfg = _composed(config_name, [o for o, p in parsed.items()
                                          if o not in unknown and not p.is_sweep_override()])
            section = None
        except HydraException as err:
            section = _unknown_key(err)
    return "; ".join(unknown_key_message(key, cfg) for key in dict.fromkeys(unknown.values() or [missing]))


def unknown_key_message(key: str, cfg: DictConfig | None) -> str:
    """`no key optimizer.lrr in the config; did you mean optimizer.lr?`

    Suggestions come from keys as deep as `key`: `optimizer.lrr` is closer to `optimizer.lr`
    than to the section `optimizer` it starts with.
    """
    depth = key.count(".")
    candidates = [name for name in dotted_keys(cfg) if name.count(".") == depth] if cfg is not None else []
    close = _closest(key, candidates)
    advice = (f"did you mean {' or '.join(close)}?" if close
              else "see the keys with `train --cfg job`, or add a new one with +KEY=VALUE")
    return f"no key {key} in the config; {advice}"


def _closest(word: str, candidates: Sequence[str]) -> list[str]:
    """The best match, and any about as close (a near tie is worth naming; a distant second is noise)."""
    scored = sorted(((difflib.SequenceMatcher(None, word, name).ratio(), name) for name in candidates), reverse=True)
    if not scored:  # no config to compare with (another error hid it)
        return []
    return [name for score, name in scored if score >= max(SIMILAR, scored[0][0] - NEAR_TIE)][:3]


def _within(key: str, section: str) -> bool:
    """`trainr.max_epochs` is within `trainr`, the part of it the config lacks."""
    return key == section or key.startswith(f"{section}.")


def unknown_option_message(missing: str, options: Sequence[str]) -> str:
    """`optimizer=sgdd: no such config; did you mean sgd? (the choices: adagrad, adam, ...)`"""
    group, _, name = missing.rpartition("/")
    close = _closest(name, options)
    advice = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{group}={name}: no such config{advice} (the choices: {', '.join(options)})"


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a config (a DictConfig or its unresolved container), sections included, as
    dotted paths (`optimizer`, `optimizer.lr`)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    keys: list[str] = []
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{prefix}{name}"
            keys.append(path)
            keys.extend(dotted_keys(value, f"{path}."))
    return keys


def _unknown_key(err: HydraException) -> str | None:
    """The key an override named that the config lacks, or None for any other composition error."""
    cause = err.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return str(cause.full_key)
    return None


def _composed(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    return cfg


def _overrides(args: list[str]) -> list[str]:
    """The `key=value` arguments of a command line, without Hydra's flags and their values."""
    overrides: list[str] = []
    value_expected = False
    for arg in args:
        if not value_expected and not arg.startswith("-"):
            overrides.append(arg)
        value_expected = arg in FLAGS_WITH_VALUE
    return overrides


def _exit_as_hydra_does(err: CompactHydraException) -> NoReturn:
    """Hydra's own report of its errors (what it prints without HYDRA_FULL_ERROR), exit 1."""
    print(err, file=sys.stderr)
    if isinstance(err.__cause__, OmegaConfBaseException):
        print(err.__cause__, file=sys.stderr)
    sys.exit(1)
