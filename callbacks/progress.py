"""A Rich progress bar with loss and ETA; plain periodic log lines when stdout is not a terminal.

The plain lines come at logging steps, at most one per PLAIN_LINE_INTERVAL_S seconds (the first
at once): a log file gets a steady pulse, whatever the logging interval or the epoch's length.
"""
from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.console import console

log = logging.getLogger("decltrain")
PLAIN_LINE_INTERVAL_S = 10.0


class RichProgressBar(Callback):
    def __init__(self) -> None:
        self.progress: Progress | None = None
        self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
        self._last_line = -float("inf")

    def on_fit_start(self, trainer: TrainerView) -> None:
        # A live bar only makes sense on a terminal; CI logs, SLURM and pipes get plain lines.
        if console.is_terminal and trainer.is_global_zero:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), console=console, transient=False,
            )
            self._swapped = _route_console_logging_through_rich()  # before start() redirects stdout
            self.progress.start()

    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        self.epoch_start = time.monotonic()
        self.start_batch = trainer.batch_idx
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=trainer.num_train_batches,
                                               completed=trainer.batch_idx, epoch=_epoch(trainer), loss="")

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if self.progress is not None:
            loss = f"loss {trainer.last_loss:.4f}" if trainer.global_step >= trainer.log_every_n_steps else ""
            self.progress.update(self.task, completed=trainer.batch_idx, loss=loss)
        elif trainer.should_log and trainer.is_global_zero \
                and time.monotonic() - self._last_line >= PLAIN_LINE_INTERVAL_S:
            self._last_line = time.monotonic()
            done = trainer.batch_idx - self.start_batch
            left = trainer.num_train_batches - trainer.batch_idx
            eta = timedelta(seconds=round((time.monotonic() - self.epoch_start) / max(done, 1) * left))
            log.info("epoch %s batch %d/%d loss %.4f eta %s", _epoch(trainer), trainer.batch_idx,
                     trainer.num_train_batches, trainer.last_loss, eta)

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if trainer.is_global_zero:
            log.info("epoch %s %s", _epoch(trainer), "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def on_fit_end(self, trainer: TrainerView) -> None:
        self._stop()

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        root = logging.getLogger()
        for plain, rich in self._swapped:
            root.removeHandler(rich)
            root.addHandler(plain)
        self._swapped = []


def _route_console_logging_through_rich() -> list[tuple[logging.Handler, logging.Handler]]:
    """While the bar is live, terminal log lines go through Rich, which prints them above the bar.

    A plain StreamHandler writes straight to the terminal and would tear the bar apart; file
    handlers (train.log) are left alone.
    """
    root = logging.getLogger()
    swapped: list[tuple[logging.Handler, logging.Handler]] = []
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
            rich = RichHandler(console=console, level=handler.level, show_path=False)
            root.removeHandler(handler)
            root.addHandler(rich)
            swapped.append((handler, rich))
    return swapped


def _epoch(trainer: TrainerView) -> str:
    return f"{trainer.epoch + 1}/{trainer.max_epochs}"
