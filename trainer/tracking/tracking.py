"""Loggers that talk to a tracking service: they must never take a run down.

A service that cannot be reached, refuses a call or is misconfigured gives one warning; the
logger then goes quiet and the run continues with its other loggers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from decltrain.trainer.errors import first_line
from decltrain.trainer.runs import layout
from decltrain.trainer.tracking.loggers import Logger

log = logging.getLogger("decltrain")
T = TypeVar("T")


class Tracker(Logger):
    """Base of the service loggers: `_call` runs one action unless an earlier one failed.

    The service's run starts (`_start`) with the first action, after a resumed run restored the
    logger: a new tracked run, or the one the checkpoint names. The config given to `log_config`
    is sent then too.
    """

    service = "tracker"

    def __init__(self) -> None:
        self.off = False
        self._started = False
        self._config: dict[str, Any] | None = None

    def log_config(self, config: dict[str, Any]) -> None:
        self._config = config  # sent when the run starts

    def _start(self, config: dict[str, Any] | None) -> None:
        """Opens the service's run and records `config` in it."""
        raise NotImplementedError

    def _call(self, action: Callable[[], T]) -> T | None:
        if self.off:
            return None
        try:
            if not self._started:
                self._started = True
                self._start(self._config)
            return action()
        except Exception as err:  # anything the client raises: the run matters more than the tracker
            self.off = True
            log.warning("%s logger switched off: %s (the run goes on with its other loggers)", self.service,
                        first_line(err)[:300])
            return None


def experiment_name() -> str:
    """The experiment (`config=...`) Hydra composed, for service loggers not told a name."""
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get("config") if HydraConfig.initialized() else None
    return choice or "default"


def run_name(log_dir: str | Path) -> str:
    """The run folder's name; a sweep job's number with its sweep's folder name ("multirun_.../3")."""
    folder = Path(log_dir).resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name.isdigit() else folder.name


def artifact_files(run_dir: Path) -> list[Path]:
    """The run folder's config and metrics, which the service loggers upload at the end."""
    names = (layout.CONFIG, layout.OVERRIDES, layout.METRICS, layout.METRICS_CSV, layout.REPRODUCIBILITY)
    return [run_dir / name for name in names if (run_dir / name).is_file()]

