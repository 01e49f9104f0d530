"""The search space, written in Hydra's sweep syntax, as Optuna distributions.

    optimizer.lr: tag(log, interval(1e-4, 1e-1))   -> FloatDistribution(1e-4, 1e-1, log=True)
    model.hidden: choice(64, 128, 256)              -> CategoricalDistribution (also `64,128,256`)
    model.layers: range(1, 4)                       -> CategoricalDistribution([1, 2, 3])
    model.hidden: int(interval(32, 256))            -> IntDistribution(32, 256) (Hydra's `int` cast)

Anything else is a plain override that every trial gets. For a key given twice (the search
config's `params`, then the command line) the later one wins: `optimizer.lr=3e-3` on the command
line takes the learning rate out of the search.
"""
from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Transformer


def split(overrides: list[str], parser: OverridesParser) -> tuple[dict[str, Any], list[str]]:
    """(search space as {key: optuna distribution}, fixed overrides as `key=value` strings)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
        elif override.is_choice_sweep() or override.is_range_sweep():
            choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))  # Optuna checks them
            space[key] = CategoricalDistribution(choices)
        else:
            sweep = override.value()
            assert isinstance(sweep, IntervalSweep) and sweep.start is not None and sweep.end is not None
            log = "log" in sweep.tags
            if isinstance(sweep.start, int) and isinstance(sweep.end, int):
                space[key] = IntDistribution(sweep.start, sweep.end, log=log)
            else:
                space[key] = FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    return space, list(fixed.values())


def as_override(key: str, value: Any) -> str:
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
