"""MLflow: the run's params, scalars by step, tags and run-folder files in an MLflow run.

The tracking URI is `tracking_uri` when set, else MLFLOW_TRACKING_URI, else a SQLite store under
`outputs/` (the local store MLflow 3 recommends; `mlflow ui --backend-store-uri
sqlite:///outputs/mlflow.db` opens it). A resumed run continues the same MLflow run: its id is
kept in the checkpoint.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from decltrain.trainer.tracking import provenance, tracking
from decltrain.trainer.tracking.hparams import flatten
from decltrain.trainer.tracking.tracking import Tracker, artifact_files, run_name

# MLflow retries an unreachable server for minutes by default (7 retries with backoff, 120 s
# timeout); a tracker must never hold a run up that long, so a server that does not answer within
# 10 s switches the logger off at once. The user's own settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

LOCAL_STORE = Path("outputs") / "mlflow.db"
_STATUS = {"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_BATCH = 100              # MLflow's limit on params per log_batch call


class MLflowLogger(Tracker):
    service = "MLflow"

    def __init__(self, log_dir: str | Path, experiment_name: str | None = None, tracking_uri: str | None = None,
                 tags: dict[str, str] | None = None, log_artifacts: bool = True) -> None:
        super().__init__()
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(log_dir)
        self.log_artifacts = log_artifacts
        self.experiment_name = experiment_name or tracking.experiment_name()
        self.tags = dict(tags or {})
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _local_store()
        self.client = MlflowClient(self.tracking_uri)
        self.run_id: str | None = None  # a resumed run's, from the checkpoint; else made at the start

    @property
    def _run_id(self) -> str:
        """The MLflow run: known whenever the logger is on (`_start` succeeded)."""
        assert self.run_id is not None, "_call runs nothing once the logger is off"
        return self.run_id

    def _start(self, config: dict[str, Any] | None) -> None:
        if self.run_id is not None:  # resumed: the same MLflow run, running again
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self._create_run()
        if config is not None:
            self._log_params(config)

    def _create_run(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            self.experiment_name, artifact_location=_artifact_location(self.tracking_uri))
        git = provenance.source_repository()
        tags = {"experiment": self.experiment_name, "run_dir": str(self.run_dir.resolve()), **self.tags}
        if git:
            tags.update({"git_commit": git["commit"], "mlflow.source.git.commit": git["commit"],
                         "git_dirty": str(git["dirty"])})
        return str(self.client.create_run(experiment_id, run_name=run_name(self.run_dir), tags=tags).info.run_id)

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # Params cannot change once logged: a resumed run adds only those it did not have.
        known = self.client.get_run(self._run_id).data.params
        params = [Param(key, str(value)[:_MAX_PARAM_LENGTH]) for key, value in flatten(config).items()
                  if key not in known]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(self._run_id, params=params[start:start + _BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_valid_name(name), float(value), now, step) for name, value in metrics.items()]
        self._call(lambda: self.client.log_batch(self._run_id, metrics=batch))

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def close(self, status: str = "success") -> None:
        def finish() -> None:
            if self.log_artifacts:
                for path in artifact_files(self.run_dir):
                    folder = str(path.parent.relative_to(self.run_dir)) if path.parent != self.run_dir else None
                    self.client.log_artifact(self._run_id, str(path), artifact_path=folder)
            self.client.set_terminated(self._run_id, _STATUS.get(status, "FINISHED"))
        self._call(finish)


def _local_store() -> str:
    path = LOCAL_STORE.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite file, as `mlflow server` does (`mlartifacts/`); the server's default elsewhere.

    Without it, MLflow puts a local store's artifacts into `./mlruns` of whatever folder the
    run was started from.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def _valid_name(name: str) -> str:
    """MLflow metric names allow letters, digits, `_ - . / space`; anything else becomes `_`."""
    return "".join(char if char.isalnum() or char in "_-./ " else "_" for char in name)
