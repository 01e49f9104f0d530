"""The callbacks as the loop calls them, checked against the metrics the task produces."""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from decltrain.callbacks.base import EVENTS, Callback, overrides
from decltrain.callbacks.monitor import Monitor
from decltrain.trainer.engine.profiler import Profiler
from decltrain.trainer.engine.scheduling import LRSchedule


def handlers(callbacks: dict[str, Callback], profiler: Profiler) -> dict[str, list[Callable[..., Any]]]:
    """Per event, only the callbacks that do something on it: idle ones cost nothing per step.

    Callbacks that write checkpoints come last, so a file holds every other callback's update
    of the same event (early stopping's counter, the weight average of this step).
    """
    ordered = sorted(callbacks.items(), key=lambda item: item[1].writes_checkpoints)
    return {event: [profiler.wrap(f"{name}.{event}", getattr(cb, event)) for name, cb in ordered
                    if overrides(cb, event)] for event in EVENTS}


def check_monitors(callbacks: dict[str, Callback], lr_schedule: LRSchedule | None, available: Collection[str]) -> None:
    """Every monitored name (callbacks, scheduler) is a metric the task produces: checked before training."""
    for monitor in [getattr(callback, "monitor", None) for callback in callbacks.values()]:
        if isinstance(monitor, Monitor):
            monitor.check(available)
    if lr_schedule is not None:
        lr_schedule.check_monitor(available)
