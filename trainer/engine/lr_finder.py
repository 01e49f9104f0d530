"""The learning-rate range test (Smith, 2015; fastai's and Lightning's lr_find).

The learning rate grows exponentially from `min_lr` to `max_lr` over `num_steps` optimizer
steps while the (smoothed) training loss is recorded; the sweep stops early once the loss
diverges (exceeds `divergence` times its best). The suggestion is the rate where the smoothed
loss falls fastest, before its minimum.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor

from decltrain.trainer.engine.data import Loader
from decltrain.trainer.engine.placement import to_device
from decltrain.trainer.engine.task import Task, total_loss

SMOOTHING = 0.98  # exponential moving average of the loss (debiased), as in fastai
SKIP_START = 10  # the first steps' slope is noise


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    diverged: bool


def range_test(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Loader, task: Task,
               device: torch.device, min_lr: float = 1e-7, max_lr: float = 1.0, num_steps: int = 200,
               divergence: float = 4.0) -> RangeTest:
    """Sweeps a copy of `model` and `optimizer`: the caller's objects and the global RNG stay as they were."""
    model = copy.deepcopy(model).to(device).train()
    optimizer = type(optimizer)(model.parameters(), **optimizer.defaults)
    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    batches = itertools.chain.from_iterable(loader for _ in itertools.count())
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for step, batch in zip(range(num_steps), batches):
            lr = min_lr * (max_lr / min_lr) ** (step / max(1, num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = total_loss(task.loss(model, to_device(batch, device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(value) or (step > SKIP_START and smoothed > divergence * best):
                diverged = True
                break
    return RangeTest(lrs, losses, suggest(lrs, losses), diverged)


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of the loss (per decade of lr), before the loss's minimum."""
    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    end = min(finite, key=lambda i: losses[i]) + 1 if finite else len(losses)
    start = SKIP_START if end - SKIP_START >= 3 else 0
    if end - start < 3:
        return lrs[max(0, end - 1)]
    slopes = np.gradient(np.array(losses[start:end]), np.log10(np.array(lrs[start:end])))
    return lrs[start + int(np.argmin(slopes))]


def plot(result: RangeTest, path: Path, size: tuple[int, int] = (720, 440)) -> torch.Tensor:
    """Loss over log(lr) with the suggestion marked, saved as a PNG; returns the (3, H, W) image."""
    width, height = size
    left, right, top, bottom = 64, 20, 30, 44
    font = ImageFont.load_default()
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = np.log10(result.lrs)
    ys = np.array(result.losses)
    finite = ys[np.isfinite(ys)]
    y_low = float(finite.min())
    y_high = float(min(finite.max(), finite[0] * 1.5 if finite[0] > y_low else finite.max())) or y_low + 1
    y_high = max(y_high, y_low + 1e-6)
    x_low, x_high = float(math.floor(xs[0])), float(math.ceil(xs[-1]))

    def point(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, y_low), y_high)
        return (left + (x - x_low) / max(1e-9, x_high - x_low) * (width - left - right),
                height - bottom - (y - y_low) / (y_high - y_low) * (height - top - bottom))

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for decade in range(int(x_low), int(x_high) + 1):
        x, _ = point(decade, y_low)
        draw.line((x, height - bottom, x, height - bottom + 4), fill="black")
        draw.text((x - 14, height - bottom + 8), f"1e{decade}", fill="black", font=font)
    for k in range(5):
        value = y_low + k * (y_high - y_low) / 4
        _, y = point(x_low, value)
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((4, y - 6), f"{value:.3g}", fill="black", font=font)
    draw.line([point(x, y) for x, y in zip(xs, ys) if math.isfinite(y)], fill=(31, 119, 180), width=2)
    x_mark, _ = point(math.log10(result.suggestion), y_low)
    draw.line((x_mark, top, x_mark, height - bottom), fill=(214, 39, 40), width=1)
    draw.text((left + 6, 8), f"smoothed training loss over the learning rate; suggested {result.suggestion:.2e}",
              fill="black", font=font)
    draw.text((width // 2 - 40, height - 18), "learning rate (log)", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return pil_to_tensor(image)
