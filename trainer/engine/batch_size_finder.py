"""The largest batch size whose training step and evaluation fit in the device's memory, with a margin.

Batch sizes double from `start` until one does not fit (out of memory, or a peak above the
allowed share of the device), then a binary search between the last that fit and the first that
did not, as Lightning's `BatchSizeFinder` does in its `binsearch` mode. Each try is one real
step (forward, backward, optimizer step) and one evaluation forward on a batch of that size, so
gradients, optimizer state and activations all count. On a GPU the peak is torch's allocator
peak against the device's memory; on a CPU, the process's peak resident memory against the
machine's, so there each try also reports what it cost.
"""
from __future__ import annotations

import gc
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from decltrain.trainer.engine.placement import to_device
from decltrain.trainer.engine.precision import Precision
from decltrain.trainer.engine.task import Task, total_loss


@dataclass
class SearchResult:
    batch_size: int  # the largest that fit (0: not even `start`)
    tried: dict[int, tuple[bool, int]] = field(default_factory=dict)  # batch size -> (fits, peak bytes)


def search(fits: Callable[[int], tuple[bool, int]], start: int, largest: int) -> SearchResult:
    """Doubles from `start` (up to `largest`) until a size does not fit, then bisects; `fits(n)` -> (fits, peak)."""
    result = SearchResult(0)

    def tried(size: int) -> bool:
        result.tried[size] = fits(size)
        return result.tried[size][0]

    size = start
    while size <= largest and tried(size):
        result.batch_size = size
        size *= 2
    low, high = result.batch_size, min(size, largest + 1)  # low fits (or is 0); high does not (or is past largest)
    while result.batch_size and high - low > 1:
        middle = (low + high) // 2
        if tried(middle):
            low = result.batch_size = middle
        else:
            high = middle
    return result


def step_fits(model: nn.Module, optimizer: torch.optim.Optimizer, task: Task, precision: Precision,
              batch: Callable[[int], Any], device: torch.device, margin: float) -> Callable[[int], tuple[bool, int]]:
    """`fits(n)` for `search`: one training step and one evaluation forward on a batch of `n` samples."""

    def fits(size: int) -> tuple[bool, int]:
        samples = to_device(batch(size), device)
        start_peak(device)
        try:
            model.train()
            with precision.autocast():
                loss, _ = total_loss(task.loss(model, samples))
            precision.backward(loss)
            precision.step(optimizer)
            precision.update()
            optimizer.zero_grad(set_to_none=True)
            model.eval()
            with torch.no_grad(), precision.autocast():
                task.update(task.metrics("val").to(device), model, samples)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            return False, capacity(device)
        finally:
            del samples
            gc.collect()
        used = peak(device)
        return used <= (1 - margin) * capacity(device), used

    return fits


def start_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int:
    """Bytes at the peak since `start_peak`: the allocator's on a GPU; on a CPU the process's peak
    resident memory so far (sizes are tried in rising order while doubling, so it is this size's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def capacity(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
