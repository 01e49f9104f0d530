"""The run folder's layout, spelled once, and the one reading of a checkpoint named on the command line.

    <run>/                         outputs/<experiment>/<timestamp>/ (hydra.run.dir, configs/hydra/default.yaml)
      .hydra/config.yaml           the composed config, unresolved: evaluate/predict/export rebuild from it
      .hydra/overrides.yaml        the command line's overrides
      train.log                    the log (Hydra names it after hydra.job.name)
      reproducibility.json         one record per start (trainer/tracking/provenance.py)
      status.json                  running, done, failed, stopped or pruned (trainer/runs/status.py)
      metrics.json                 best, last and test metrics (trainer/commands/train_job.py)
      metrics.csv                  with logger=csv (trainer/tracking/csv_logger.py)
      checkpoints/last.ckpt        the newest state; best.ckpt, epoch=E-step=S.ckpt (callbacks/model_checkpoint.py)
      eval_<split>.json            evaluate's metrics
      export/model.onnx            export-model's files

No torch import: `resume.run_dir`, which reads it, runs before Hydra composes the config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from decltrain.trainer.errors import UserError

HYDRA = Path(".hydra")
CONFIG = HYDRA / "config.yaml"
OVERRIDES = HYDRA / "overrides.yaml"
REPRODUCIBILITY = "reproducibility.json"
STATUS = "status.json"
METRICS = "metrics.json"
METRICS_CSV = "metrics.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
EXPORT = "export"
INFERENCE = "inference.pt"  # what predict and export-model need of the data (commands/inference_record.py)
# Checkpoint names with a meaning beyond a file name (see `find_checkpoint`).
AUTO, LATEST = "auto", "latest"


def checkpoints(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def last(run_dir: Path) -> Path:
    """`<run>/checkpoints/last.ckpt`, the state a resumed run continues from."""
    return checkpoints(run_dir) / LAST


def top_k_name(epoch: int, step: int) -> str:
    """A top-k checkpoint's file name; `epoch` is 1-based (the epoch just finished)."""
    return f"epoch={epoch:03d}-step={step}.ckpt"


def result(metrics: dict[str, Any]) -> float | None:
    """The run's result in its metrics.json content: the monitored metric of its best checkpoint
    (what a sweeper optimises); None without a monitored checkpoint."""
    return metrics["best"][metrics["monitor"]] if metrics.get("best") else None


def evaluation(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / f"eval_{split}.json"


def find_checkpoint(name: str, run_dir: Path, key: str) -> Path:
    """The file that `key=name` (`resume=...`, `ckpt=...`) means for the run folder `run_dir`.

    - `best`, `last`, `auto`: that file of `<run_dir>/checkpoints/` (`auto`: last.ckpt; a run
      resumed with `auto` and no last.ckpt starts fresh instead, see `resume.checkpoint`);
    - `latest`: its `last.ckpt` (`resume.run_dir` made the newest run folder with one `run_dir`);
    - a file: as given, else relative to `run_dir` or its checkpoints/;
    - a run folder: its `last.ckpt`.
    Anything else raises a UserError naming what is missing and what to pass instead.
    """
    if name == LATEST:
        if not last(run_dir).is_file():
            raise UserError(f"{key}=latest found no run with {CHECKPOINTS}/{LAST} under {Path(run_dir).parent}; "
                            f"pass {key}=<checkpoint file or run folder>")
        return last(run_dir)
    if name in (AUTO, Path(LAST).stem, Path(BEST).stem):
        return _named(run_dir, BEST if name == Path(BEST).stem else LAST, key)
    for candidate in (Path(name), Path(run_dir) / name, checkpoints(run_dir) / name):
        if candidate.is_file():
            return candidate
    if Path(name).is_dir():
        if not last(Path(name)).is_file():
            raise UserError(f"{key}={name}: the run folder has no {CHECKPOINTS}/{LAST}; pass a checkpoint file instead")
        return last(Path(name))
    raise UserError(f"{key}={name}: checkpoint {name} not found: no such checkpoint file or run folder (looked "
                    f"here, in run folder {run_dir} and in its {CHECKPOINTS}/); pass an existing file or run folder, "
                    f"or {key}=last or {key}=best")


def _named(run_dir: Path, file_name: str, key: str) -> Path:
    path = checkpoints(run_dir) / file_name
    if path.is_file():
        return path
    present = sorted(p.name for p in checkpoints(run_dir).glob("*.ckpt")) if checkpoints(run_dir).is_dir() else []
    if not present:
        raise UserError(f"run folder {run_dir} has no checkpoint ({CHECKPOINTS}/ is empty or missing): "
                        "runs with trainer.fast_dev_run=true or callbacks.model_checkpoint=null save none; "
                        "train again without them")
    raise UserError(f"run folder {run_dir} has no {CHECKPOINTS}/{file_name} (it holds {', '.join(present)}); "
                    f"pass {key}=<one of them>")
