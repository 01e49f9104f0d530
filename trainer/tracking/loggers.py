"""Experiment loggers. The Trainer calls them only on the global-zero process.

Every logger is built (trainer/commands/build.py) from its `logger.<name>` config plus three values of
the run: `log_dir` (the run folder), `purge_step` (a resumed run's first step: points an
interrupted run wrote at or after it are dropped where the logger can) and `resumed` (what the
loggers' `state_dict`s put into the checkpoint being resumed, else an empty dict).

TensorBoard's writer is imported when a logger is built (about 0.3 s on an idle machine), so
runs without logging (`logger=none`, `fast_dev_run`) never pay for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Logger:
    """Interface: the config at the start, scalars (and images) during the run, hyperparameters
    with the final metrics at the end."""

    # True for loggers that drop, when a run resumes, the points logged at or after `purge_step`;
    # the resumed run logs again what the checkpoint's own step had (Trainer.load_state_dict).
    # Trackers that keep every point they were sent (MLflow, W&B) still have those.
    purges = False

    def log_config(self, config: dict[str, Any]) -> None:
        """The whole resolved config (nested), once the run starts."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The values that tell runs apart (trainer/tracking/hparams.py) with the run's final metrics."""

    def log_image(self, name: str, image: torch.Tensor, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run continues this logger's run (plain values,
        keys unique among loggers)."""
        return {}

    def flush(self) -> None: ...

    def close(self, status: str = "success") -> None:
        """`status`: success, failed (an error) or killed (stopped by a signal)."""


class TensorBoardLogger(Logger):
    """Writes event files straight into the run folder (`tensorboard --logdir outputs`)."""

    purges = True

    def __init__(self, log_dir: str | Path, purge_step: int | None = None,
                 resumed: dict[str, Any] | None = None) -> None:
        # purge_step drops events at or after it that an interrupted run wrote, so a resumed
        # run continues the same curves without duplicated points.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, name: str, image: torch.Tensor, step: int) -> None:
        """`image` is (C, H, W), uint8 or float in [0, 1]."""
        self.writer.add_image(name, image, step, dataformats="CHW")

    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Fills the HPARAMS tab; written into this run's own folder, not a timestamped sub-run."""
        from torch.utils.tensorboard.summary import hparams

        clean = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
                 for key, value in params.items()}
        experiment, session_start, session_end = hparams(clean, metrics)
        file_writer = self.writer.file_writer
        assert file_writer is not None  # None only after close()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str = "success") -> None:
        self.writer.close()
