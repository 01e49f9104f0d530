"""Weights & Biases: the config, scalars by step and run-folder files in a W&B run.

`WANDB_MODE=offline` (or `mode: offline`) writes the run under `<run folder>/wandb/` for a later
`wandb sync`. A resumed run continues the same W&B run: its id is kept in the checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from decltrain.trainer.tracking import provenance, tracking
from decltrain.trainer.tracking.tracking import Tracker, artifact_files, run_name

_EXIT_CODE = {"success": 0, "failed": 1, "killed": 143}
_INIT_TIMEOUT_S = 60  # W&B waits 90 s for an unreachable server by default


class WandbLogger(Tracker):
    service = "W&B"

    def __init__(self, log_dir: str | Path, project: str | None = None, entity: str | None = None,
                 mode: str | None = None, group: str | None = None, tags: list[str] | None = None,
                 log_artifacts: bool = True) -> None:
        super().__init__()
        self.run_dir = Path(log_dir)
        self.log_artifacts = log_artifacts
        self.run: Any = None
        self.run_id: str | None = None  # a resumed run's, from the checkpoint
        git = provenance.source_repository()
        self.settings: dict[str, Any] = {"project": project or tracking.experiment_name(), "entity": entity, "group": group,
                         "tags": tags, "mode": mode or os.environ.get("WANDB_MODE"), "dir": str(self.run_dir),
                         "name": run_name(self.run_dir), "notes": f"run folder {self.run_dir.resolve()}",
                         "config": {"git_commit": git["commit"], "git_dirty": git["dirty"]} if git else None}

    def _start(self, config: dict[str, Any] | None) -> None:
        import wandb

        resumed = {"resume": "allow", "id": self.run_id} if self.run_id else {}
        settings: dict[str, Any] = {key: value for key, value in {**self.settings, **resumed}.items()
                                    if value is not None}
        self.run = wandb.init(reinit="create_new", settings=wandb.Settings(init_timeout=_INIT_TIMEOUT_S),
                              **settings)
        if config is not None:
            self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call(lambda: self.run.log(metrics, step=step))

    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self._call(lambda: self.run.summary.update(metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run.id} if self.run is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def close(self, status: str = "success") -> None:
        def finish() -> None:
            if self.log_artifacts:
                for path in artifact_files(self.run_dir):
                    self.run.save(str(path), base_path=str(self.run_dir), policy="now")
            self.run.finish(exit_code=_EXIT_CODE.get(status, 0))
        self._call(finish)
