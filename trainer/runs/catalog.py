"""The run folders under a folder, each read into one `RunEntry` for the `runs` command.

A run folder is a folder holding `.hydra/` (what Hydra writes for every `train` job, sweep jobs
included); the search does not descend into one. Listing reads small files only: the status
record (trainer/runs/status.py) and metrics.json, plus `.hydra/overrides.yaml` for a run written
before status records existed. A run's composed config (`.hydra/config.yaml`) is read only to
filter or compare by config keys, and only for a run whose status record lacks it. No torch import.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decltrain.trainer.runs import layout, status
from decltrain.trainer.tracking.hparams import flatten

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser, where PyYAML was built with it
_NOT_RUNS = {layout.CHECKPOINTS, layout.EXPORT, "tensorboard", "wandb", "mlruns"}  # big folders inside runs


@dataclass
class RunEntry:
    """One run as `runs ls` shows it."""
    folder: str
    experiment: str
    status: str                  # running, done, failed, stopped, pruned, crashed; unknown without a record
    started: str | None          # ISO time of its first start
    seconds: float | None        # training time over all starts
    epoch: int | None
    step: int | None
    metric: str | None           # the monitored metric (callbacks.model_checkpoint.monitor)
    best: float | None           # its best value
    mode: str | None             # min or max: which way `metric` improves
    overrides: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def value(self, metric: str) -> float | None:
        """The run's value of `metric`: its monitored best, else from metrics.json (best, then test, then last)."""
        if metric == self.metric:
            return self.best
        metrics = read_json(Path(self.folder) / layout.METRICS) or {}
        for section in ("best", "test", "last"):
            value = (metrics.get(section) or {}).get(metric)
            if isinstance(value, (int, float)):
                return float(value)
        return None


def run_folders(root: Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself when it is one), in no particular order."""
    if (root / layout.HYDRA).is_dir():
        return [root]
    found: list[Path] = []
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or entry.name.startswith(".") or entry.name in _NOT_RUNS:
                    continue
                if os.path.isdir(os.path.join(entry.path, layout.HYDRA)):
                    found.append(Path(entry.path))
                else:
                    pending.append(entry.path)
    return found


def entry(folder: Path) -> RunEntry:
    """The run in `folder`, from its status record and metrics.json."""
    record = status.read(folder) or {}
    metrics = read_json(folder / layout.METRICS) or {}
    overrides = record.get("overrides")
    if overrides is None:
        overrides = _saved_overrides(folder)
    metric = metrics.get("monitor") or record.get("monitor")
    best = layout.result(metrics) if metrics.get("best") else record.get("best")
    last = metrics.get("last") or {}
    return RunEntry(
        folder=str(folder), experiment=str(record.get("experiment") or _experiment(overrides, folder)),
        status=status.observed(record) if record else ("done" if metrics else "unknown"),
        started=record.get("started"), seconds=status.duration_s(record) if record else None,
        epoch=record.get("epoch", last.get("epoch")), step=record.get("step", last.get("global_step")),
        metric=metric, best=best, mode=record.get("mode"), overrides=list(overrides), error=record.get("error"))


def config(folder: Path) -> dict[str, Any]:
    """The run's composed config (unresolved) as {dotted key: value}: from its status record (JSON, read
    fast), else from `.hydra/config.yaml`; {} when neither can be read."""
    saved = (status.read(folder) or {}).get("config")
    if isinstance(saved, dict):
        return saved
    tree = read_yaml(folder / layout.CONFIG)
    return flatten(tree) if isinstance(tree, dict) else {}


def read_json(path: Path) -> Any:
    """A JSON file's content, None when it is missing or unreadable (a run still writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> Any:
    """A YAML file's content, None when it is missing or unreadable."""
    try:
        return yaml.load(path.read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        return None


def _saved_overrides(folder: Path) -> list[str]:
    overrides = read_yaml(folder / layout.OVERRIDES)
    return [str(item) for item in overrides] if isinstance(overrides, list) else []


def _experiment(overrides: list[str], folder: Path) -> str:
    """A run without a status record: its `config=` override, else its folder's parent (outputs/<experiment>/)."""
    chosen = [item.split("=", 1)[1] for item in overrides if item.startswith("config=")]
    return chosen[-1] if chosen else folder.parent.name
