"""Experiment loggers. The Trainer calls them only on the global-zero process.

Every logger is built (trainer/commands/build.py) from its `logger.<name>` config plus the run
folder (`log_dir`), and starts nothing when built: its writer, or its tracking service's run,
starts at first use. A resumed run first restores each logger from the checkpoint
(`load_state_dict`, called by the Trainer), so it continues where the checkpoint was written:
file loggers drop what the interrupted run logged after it, service loggers continue the same
tracked run.

TensorBoard's writer is imported at its first use (about 0.3 s on an idle machine), so runs
without logging (`logger=none`, `fast_dev_run`) never pay for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Logger:
    """Interface: the config at the start, scalars (and images) during the run, hyperparameters
    with the final metrics at the end, and a state that checkpoints keep."""

    def log_config(self, config: dict[str, Any]) -> None:
        """The whole resolved config (nested), once the run starts."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The values that tell runs apart (trainer/tracking/hparams.py) with the run's final metrics."""

    def log_image(self, name: str, image: torch.Tensor, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run continues this logger (plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resuming: what `state_dict` gave when the checkpoint was written; called before any other use."""

    def flush(self) -> None: ...

    def close(self, status: str = "success") -> None:
        """`status`: success, failed (an error) or killed (stopped by a signal)."""


class LastStep:
    """The scalars a file logger wrote at its latest step: what it writes again when resumed.

    A resumed file logger drops everything the interrupted run logged from that step on (also
    what it logged after its checkpoint at the same step, e.g. a final test) and logs the step's
    scalars again, so its curves equal those of a run that was never interrupted.
    """

    def __init__(self) -> None:
        self.step = -1
        self.scalars: dict[str, float] = {}

    def record(self, metrics: dict[str, float], step: int) -> None:
        if step != self.step:
            self.step, self.scalars = step, {}
        self.scalars.update(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "scalars": dict(self.scalars)}


class TensorBoardLogger(Logger):
    """Writes event files straight into the run folder (`tensorboard --logdir outputs`)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.last_step = LastStep()
        self._latest: dict[str, float] = {}  # each tag's latest value: what HPARAMS shows for it
        self._purge_step: int | None = None
        self._writer: Any = None  # a SummaryWriter, from the first use

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the events at or after `purge_step` that earlier event files hold.
            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self._purge_step)
        return self._writer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.last_step.record(metrics, step)
        self._latest.update(metrics)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, name: str, image: torch.Tensor, step: int) -> None:
        """`image` is (C, H, W), uint8 or float in [0, 1]."""
        self.writer.add_image(name, image, step, dataformats="CHW")

    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Fills the HPARAMS tab; written into this run's own folder, not a timestamped sub-run.

        HPARAMS reads a metric's value from the latest point of the curve with its name, so a final
        value no curve ends at (the run's mean `perf/samples_per_sec`, where the curve is windowed)
        is left out: every value the tab shows is the one metrics.json holds. Booleans are shown
        as text (`true`), not as 1.0000.
        """
        from torch.utils.tensorboard.summary import hparams

        clean = {key: str(value).lower() if isinstance(value, bool) else
                 value if isinstance(value, (int, float, str)) else str(value) for key, value in params.items()}
        shown = {name: value for name, value in metrics.items() if self._latest.get(name) == value}
        experiment, session_start, session_end = hparams(clean, shown)
        file_writer = self.writer.file_writer
        assert file_writer is not None  # None only after close()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)

    def state_dict(self) -> dict[str, Any]:
        return self.last_step.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._purge_step = max(state["step"], 0)
        if state["scalars"]:
            self.log_metrics(state["scalars"], state["step"])

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self, status: str = "success") -> None:
        if self._writer is not None:
            self._writer.close()
