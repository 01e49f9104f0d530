"""Comparing a monitored metric, shared by checkpointing and early stopping."""
from __future__ import annotations

import math
from collections.abc import Collection

from decltrain.trainer.errors import UserError


class Monitor:
    """Which metric to watch and in which direction it improves."""

    def __init__(self, owner: str, monitor: str, mode: str) -> None:
        if mode not in ("min", "max"):
            raise UserError(f"callbacks.{owner}.mode={mode!r} is not valid; use 'min' or 'max'")
        self.owner = owner
        self.name = monitor
        self.mode = mode

    def check(self, available: Collection[str]) -> None:
        """Fails at start when the task does not produce the monitored metric."""
        require_metric(f"callbacks.{self.owner}.monitor", self.name, available)

    def read(self, metrics: dict[str, float]) -> float:
        require_metric(f"callbacks.{self.owner}.monitor", self.name, metrics)
        return metrics[self.name]

    def better(self, value: float, reference: float | None, min_delta: float = 0.0) -> bool:
        """True when `value` beats `reference` by more than `min_delta`; a non-finite value never does."""
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        return value < reference - min_delta if self.mode == "min" else value > reference + min_delta


def require_metric(key: str, name: str, available: Collection[str]) -> None:
    """The one error for a monitor (of a callback, the scheduler) naming a metric that does not exist."""
    if name not in available:
        raise UserError(f"{key}={name!r} is not a validation metric of this task; choose one of "
                        f"{', '.join(sorted(available))}")
