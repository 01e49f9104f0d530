"""Saves `last.ckpt` and the best checkpoints by a monitored metric, never losing a good file.

Files in `<run>/checkpoints/` (names from trainer/runs/layout.py):
  last.ckpt                 the newest state (every epoch, and every N optimizer steps if asked)
  epoch=E-step=S.ckpt       the `save_top_k` best by `monitor`
  best.ckpt                 the best of them (a hard link, so no second copy is written)

On a stop signal (SIGTERM, SIGINT, USR2), and when the loop stops inside an epoch (`max_steps`, a
callback's `should_stop`), `last.ckpt` is written at the step where the loop stopped. Every file
appears atomically (see trainer/engine/checkpoint.py); a file leaves only after its replacement is
safely on disk. Checkpoints are written in `on_train_epoch_end`, after every `on_validation_end`
handler ran, so the saved callback states (early stopping's counter) are those of the finished
epoch; after a mid-epoch validation (`trainer.val_check_interval`) they are written in
`on_validation_end`, which for this callback runs after every other one. This callback's own
bookkeeping (the top k, the best's metrics) is updated before the file is written, so every
file, `last.ckpt` included, knows the best as of its own validation.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.monitor import Monitor
from decltrain.trainer.engine.checkpoint import (fsync_dir, remove, remove_unfinished_shards,
                                                  remove_unreferenced_shards, temporary_sibling)
from decltrain.trainer.errors import Preempted
from decltrain.trainer.runs import layout

log = logging.getLogger("decltrain")


class ModelCheckpoint(Callback):
    writes_checkpoints = True

    def __init__(self, dirpath: str | None = None, monitor: str | None = "val/acc", mode: str = "max",
                 save_top_k: int = 1, save_last: bool = True, every_n_epochs: int = 1,
                 every_n_train_steps: int | None = None) -> None:
        self.dirpath = Path(dirpath) if dirpath else None
        # The folder files go to: `dirpath`, or else the run's checkpoints/ once fit starts.
        self.dir: Path | None = self.dirpath
        self._writes = False  # under DDP only the global-zero rank writes; known once fit starts
        self.monitor = Monitor("model_checkpoint", monitor, mode) if monitor else None
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.top_k: list[tuple[float, str]] = []  # (score, file name), best first
        # The best checkpoint's validation metrics, epoch (1-based, finished) and step.
        self.best: dict[str, Any] | None = None
        self._latest: dict[str, float] | None = None  # the latest validation's metrics, until saved

    @property
    def best_path(self) -> Path | None:
        """`best.ckpt`, once a best checkpoint exists and its folder is known; None before."""
        return self.dir / layout.BEST if self.top_k and self.dir is not None else None

    @property
    def _folder(self) -> Path:
        """`dir` in the hooks that write, which run after `on_fit_start` has resolved it."""
        if self.dir is None:
            raise RuntimeError("ModelCheckpoint writes only during fit, after on_fit_start chose its folder")
        return self.dir

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.dir = self.dirpath or layout.checkpoints(Path(trainer.run_dir))
        # Under DDP every rank keeps the same bookkeeping (metrics are reduced over ranks), so
        # each knows `best_path`; only the global-zero rank touches files.
        self._writes = trainer.is_global_zero
        # Temporary files of a process that was killed mid-write: never a valid checkpoint.
        for stale in self.dir.glob(".*.tmp") if self._writes else ():
            stale.unlink(missing_ok=True)
        if self._writes:
            remove_unfinished_shards(self.dir)

    def on_validation_end(self, trainer: TrainerView, metrics: dict[str, float]) -> None:
        if self.monitor is not None:
            self._latest = dict(metrics)
        if trainer.validating_mid_epoch:
            self._save_validated(trainer)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer, self._folder / layout.LAST)

    def on_train_epoch_end(self, trainer: TrainerView) -> None:
        if (trainer.epoch + 1) % self.every_n_epochs == 0:
            self._save_validated(trainer)
        self._latest = None

    def _save_validated(self, trainer: TrainerView) -> None:
        """Top-k and last checkpoints of the state that was just validated."""
        metrics, self._latest = self._latest, None
        if trainer.fast_dev_run:
            return
        written: Path | None = None
        monitor = self.monitor  # set whenever `metrics` is (on_validation_end)
        if metrics is not None and monitor is not None and self._qualifies(monitor, score := monitor.read(metrics)):
            written = self._folder / layout.top_k_name(trainer.epoch + 1, trainer.global_step)
            dropped = self._admit(monitor, score, written.name)
            is_best = self.top_k[0][1] == written.name
            if is_best:
                self.best = {"epoch": trainer.epoch + 1, "global_step": trainer.global_step,
                             "checkpoint": written.name, **metrics}
            self._save(trainer, written)  # after the bookkeeping: the file holds its own admission
            if is_best:
                self._publish(trainer, written, self._folder / layout.BEST)
            for name in dropped if self._writes else ():
                remove(self._folder / name)  # with the folder of its shards, which no other file names
        if self.save_last:
            if written is not None:
                self._publish(trainer, written, self._folder / layout.LAST)
            else:
                self._save(trainer, self._folder / layout.LAST)

    def on_fit_end(self, trainer: TrainerView) -> None:
        """The loop stopped inside an epoch (`max_steps`, `should_stop`): keep that step to continue from."""
        if self.save_last and trainer.batch_idx > 0:
            self._save(trainer, self._folder / layout.LAST)

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        """On a stop signal the loop stopped at a step boundary: keep that state to resume from."""
        if isinstance(error, Preempted):
            self._save(trainer, self._folder / layout.LAST)

    def _qualifies(self, monitor: Monitor, score: float) -> bool:
        if self.save_top_k == 0:
            return False
        if self.save_top_k < 0 or len(self.top_k) < self.save_top_k:
            return monitor.better(score, None)
        return monitor.better(score, self.top_k[-1][0])

    def _admit(self, monitor: Monitor, score: float, name: str) -> list[str]:
        """Adds the new file to the top k; returns the names that fell out, to remove once it is written."""
        self.top_k.append((score, name))
        self.top_k.sort(key=lambda item: item[0], reverse=monitor.mode == "max")
        if self.save_top_k < 0:
            return []
        dropped = [dropped for _, dropped in self.top_k[self.save_top_k:]]
        del self.top_k[self.save_top_k:]
        return dropped

    def _publish(self, trainer: TrainerView, source: Path, target: Path) -> None:
        trainer.wait_for_checkpoint()  # under trainer.fsdp.async_save the file may still be on its way
        if self._writes:
            _publish(source, target)

    def _save(self, trainer: TrainerView, path: Path) -> None:
        if not trainer.fast_dev_run:
            trainer.save_checkpoint(path)

    def state_dict(self) -> dict[str, Any]:
        return {"top_k": [list(item) for item in self.top_k], "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top_k = [(float(score), str(name)) for score, name in state["top_k"]]
        self.best = state.get("best")  # absent in checkpoints of earlier versions


def _publish(source: Path, target: Path) -> None:
    """Makes `target` name the same bytes as `source`, atomically (hard link; copy if unsupported); the shard
    folder of a sharded checkpoint `target` named before is removed if no file names it any more."""
    tmp_name = temporary_sibling(target)
    try:
        os.link(source, tmp_name)
    except OSError:
        shutil.copyfile(source, tmp_name)
    os.replace(tmp_name, target)
    fsync_dir(target.parent)
    remove_unreferenced_shards(target.parent)
