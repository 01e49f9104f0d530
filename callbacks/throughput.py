"""Training speed and memory: `perf/samples_per_sec` (all ranks together) and `perf/peak_memory_mb`.

Both are logged on logging steps, where the loss has just been copied to the host, so the device
has caught up and the wall clock is honest without adding a host sync of its own. At the end of
fit the averages over all training time (validation excluded) join the final metrics table.
"""
from __future__ import annotations

import resource
import sys
import time

import torch
from torch.utils.data import DistributedSampler

from decltrain.trainer.engine.callback import Callback, TrainerView
from decltrain.trainer.engine.data import StreamKeys


class ThroughputMonitor(Callback):
    def __init__(self) -> None:
        self._seconds = 0.0  # training time of finished epochs
        self._samples = 0

    def on_train_epoch_start(self, trainer: TrainerView) -> None:
        self._epoch_start = self._window = self._last = (time.perf_counter(), trainer.batch_idx)

    def on_train_batch_end(self, trainer: TrainerView) -> None:
        self._last = (time.perf_counter(), trainer.batch_idx)
        if trainer.should_log:
            trainer.log_metrics({"perf/samples_per_sec": self._rate(trainer, self._window, self._last),
                                 "perf/peak_memory_mb": peak_memory_mb(trainer.device)})
            self._window = self._last

    def on_train_epoch_end(self, trainer: TrainerView) -> None:
        (start, first), (end, last) = self._epoch_start, self._last
        self._seconds += end - start
        self._samples += _samples(trainer, first, last)

    def on_fit_end(self, trainer: TrainerView) -> None:
        summary = {"perf/peak_memory_mb": peak_memory_mb(trainer.device)}
        if self._seconds > 0:
            summary["perf/samples_per_sec"] = self._samples / self._seconds
        trainer.callback_metrics = {**trainer.callback_metrics, **summary}  # a new dict: loggers may hold the old

    def _rate(self, trainer: TrainerView, since: tuple[float, int], until: tuple[float, int]) -> float:
        return _samples(trainer, since[1], until[1]) / max(until[0] - since[0], 1e-9)


def _samples(trainer: TrainerView, from_batch: int, to_batch: int) -> int:
    """Samples all ranks trained on between two batch positions of one epoch (the last batch may be short)."""
    loader = trainer.train_loader
    # The training loaders (engine/data.py) batch a DistributedSampler's shard of the split, or a stream's share.
    assert isinstance(loader.sampler, (DistributedSampler, StreamKeys)) and loader.batch_size is not None
    per_rank, batch_size = loader.sampler.num_samples, loader.batch_size

    def done(batches: int) -> int:
        return min(batches * batch_size, per_rank)

    return (done(to_batch) - done(from_batch)) * trainer.world_size


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors ever held on `device`. CPU: this process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
