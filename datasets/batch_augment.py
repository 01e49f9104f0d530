"""Batched forms of transforms.v2 steps: one call on a (B, C, H, W) batch, one random draw per image.

`batch_form(step)` is the step as one batched call, or None where there is none (the caller then
runs the step image by image). Each form draws its parameters as torchvision's `make_params`
does, but for the whole batch at once from the global RNG of the batch's device (checkpoints
save it, so resume stays exact), and computes what torchvision's tensor kernels compute, with
each image's own parameters:

- Resize, CenterCrop, Pad, Grayscale have no randomness: torchvision's kernels take a batch.
- RandomHorizontalFlip, RandomVerticalFlip, RandomCrop (without pad_if_needed): exact.
- RandomResizedCrop: torchvision's crop boxes (10 tries of area scale and log aspect ratio, else
  the centre crop) drawn for the batch at once, then each box resized by torchvision's own
  `resize` kernel: its pixels exactly, in every interpolation mode. On uint8 channels-last boxes
  that kernel is torch's vectorized antialiased resize: with the layout changes, about 3x faster
  on the CPU than one `grid_sample` over the batch.
- RandomRotation (nearest or bilinear, without expand): torchvision's affine grid and fill.
- ColorJitter: torchvision's factors, its random order of the four adjustments (per image) and
  its uint8 arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF
# Private helpers of torchvision's adjust_hue (pinned below 0.30 in pyproject.toml): the same HSV round trip.
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

BatchForm = Callable[[torch.Tensor], torch.Tensor]
# Steps without randomness: torchvision's kernels take (..., C, H, W), so one call does the batch.
DETERMINISTIC = (v2.Resize, v2.CenterCrop, v2.Pad, v2.Grayscale)


def batch_form(step: Any) -> BatchForm | None:  # a v2 transform: torchvision is untyped, so no narrowing
    """`step` as one call on a (B, C, H, W) batch with a draw per image, or None: run it image by image."""
    kind = type(step)
    if kind in DETERMINISTIC:
        return step
    if kind in (v2.RandomHorizontalFlip, v2.RandomVerticalFlip):
        return partial(_flip, step.p, -1 if kind is v2.RandomHorizontalFlip else -2)
    if kind is v2.RandomCrop and not step.pad_if_needed and not isinstance(step.fill, dict):
        return partial(_random_crop, step)
    if kind is v2.RandomResizedCrop:
        return partial(_random_resized_crop, step)
    if (kind is v2.RandomRotation and not step.expand and not isinstance(step.fill, dict)
            and _mode(step.interpolation) in ("nearest", "bilinear")):
        return partial(_random_rotation, step)
    if kind is v2.ColorJitter:
        return partial(_color_jitter, step)
    return None


def _mode(interpolation: Any) -> str:
    return interpolation.value if isinstance(interpolation, InterpolationMode) else str(interpolation)


def _flip(p: float, dim: int, images: torch.Tensor) -> torch.Tensor:
    """Image by image into a copy: on the CPU several times faster than `torch.where` over the batch."""
    out = images.clone()
    for index in (torch.rand(len(images), device=images.device) < p).nonzero().flatten().tolist():
        out[index] = images[index].flip(dim)
    return out


def _random_crop(step: v2.RandomCrop, images: torch.Tensor) -> torch.Tensor:
    """v2.RandomCrop with an independent offset per image: pad the batch once, then gather windows."""
    if step.padding is not None:
        images = TF.pad(images, step.padding, fill=step.fill, padding_mode=step.padding_mode)
    height, width = step.size
    batch, _, padded_height, padded_width = images.shape
    device = images.device
    top = torch.randint(0, padded_height - height + 1, (batch,), device=device)
    left = torch.randint(0, padded_width - width + 1, (batch,), device=device)
    rows = (top[:, None] + torch.arange(height, device=device))[:, :, None]      # (B, h, 1)
    cols = (left[:, None] + torch.arange(width, device=device))[:, None, :]      # (B, 1, w)
    samples = torch.arange(batch, device=device)[:, None, None]
    return images[samples, :, rows, cols].permute(0, 3, 1, 2).contiguous()       # (B, h, w, C) -> (B, C, h, w)


def crop_boxes(step: v2.RandomResizedCrop, batch: int, height: int, width: int,
               device: torch.device) -> tuple[torch.Tensor, ...]:
    """`batch` draws of torchvision's `RandomResizedCrop.make_params`: top, left, height, width (int64).

    torchvision retries up to 10 times until a box fits; drawing the 10 tries at once and taking
    the first that fits gives the same distribution. None fits: the centre crop, as torchvision.
    """
    tries = 10
    area = height * width * torch.empty(batch, tries, device=device).uniform_(*step.scale)
    aspect = torch.exp(torch.empty(batch, tries, device=device).uniform_(*(math.log(r) for r in step.ratio)))
    box_w, box_h = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)
    box_w, box_h = box_w.gather(1, first).squeeze(1), box_h.gather(1, first).squeeze(1)
    top = (torch.rand(batch, device=device) * (height - box_h + 1)).long().clamp_(max=height - box_h)
    left = (torch.rand(batch, device=device) * (width - box_w + 1)).long().clamp_(max=width - box_w)
    centre_w, centre_h = width, height
    if width / height < min(step.ratio):
        centre_h = int(round(width / min(step.ratio)))
    elif width / height > max(step.ratio):
        centre_w = int(round(height * max(step.ratio)))
    any_fits = fits.any(dim=1)
    return (torch.where(any_fits, top, (height - centre_h) // 2), torch.where(any_fits, left, (width - centre_w) // 2),
            torch.where(any_fits, box_h, centre_h), torch.where(any_fits, box_w, centre_w))


def _random_resized_crop(step: v2.RandomResizedCrop, images: torch.Tensor) -> torch.Tensor:
    """Box i of image i resized by torchvision's `resize` kernel.

    Each box is first copied out compact and channels-last: on the CPU torch's uint8 antialiased
    resize is fastest in that layout (on a strided view torchvision would also repack its output).
    The batch comes out in the usual contiguous layout, which the later steps run fastest on.
    """
    batch, channels, height, width = images.shape
    out = torch.empty((batch, channels, *step.size), dtype=images.dtype, device=images.device)
    boxes = zip(*(box.tolist() for box in crop_boxes(step, batch, height, width, images.device)))
    for index, (top, left, box_h, box_w) in enumerate(boxes):
        box = images[index:index + 1, :, top:top + box_h, left:left + box_w].contiguous(memory_format=torch.channels_last)
        out[index:index + 1] = TF.resize(box, list(step.size), interpolation=step.interpolation,
                                         antialias=step.antialias)
    return out


def _random_rotation(step: v2.RandomRotation, images: torch.Tensor) -> torch.Tensor:
    """torchvision's `rotate_image` (inverse affine matrix, `_affine_grid`, fill) with an angle per image."""
    batch, _, height, width = images.shape
    device = images.device
    angle = torch.empty(batch, device=device).uniform_(*step.degrees).remainder(360)
    radians = torch.deg2rad(-angle).view(batch, 1, 1)
    cos, sin = radians.cos(), radians.sin()
    cx, cy = (0.0, 0.0) if step.center is None else (step.center[0] - width * 0.5, step.center[1] - height * 0.5)
    # torchvision's grid: output pixel centres relative to the image centre (xs, ys), through the inverse
    # rotation about (cx, cy); here straight in source pixels (its normalization and grid_sample's undone).
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=device).view(1, 1, width)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=device).view(1, height, 1)
    col = xs * cos + (ys * sin + (cx - cos * cx - sin * cy + (width - 1) * 0.5))      # (B, H, W), one full-size add
    row = xs * -sin + (ys * cos + (cy + sin * cx - cos * cy + (height - 1) * 0.5))
    fill = None if step.fill is None else [float(step.fill)] if isinstance(step.fill, (int, float)) else [
        float(value) for value in step.fill]
    if _mode(step.interpolation) == "nearest":
        return _nearest(images, col, row, fill)
    grid = torch.stack([(2 * col + 1) / width - 1, (2 * row + 1) / height - 1], dim=-1)
    floats = images if images.is_floating_point() else images.float()
    if fill is not None:  # a mask channel shows how much of each output pixel came from inside the image
        floats = torch.cat([floats, torch.ones_like(floats[:, :1])], dim=1)
    out = F.grid_sample(floats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if fill is not None:
        out, mask = out[:, :-1], out[:, -1:]
        fill_image = torch.tensor(fill, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
        out = out.sub_(fill_image).mul_(mask).add_(fill_image)
    return out if images.is_floating_point() else out.round_().to(images.dtype)


def _nearest(images: torch.Tensor, col: torch.Tensor, row: torch.Tensor, fill: list[float] | None) -> torch.Tensor:
    """`grid_sample(mode="nearest")` at source pixels (`col`, `row`), then torchvision's fill: one gather, no float copy.

    The images get a one-pixel frame of `fill` (zeros without one); each position, rounded half
    to even as grid_sample rounds, is clamped into that frame, so every position outside the
    image lands on the fill. Index arithmetic runs in place: on the CPU each fresh full-size
    tensor costs its page faults.
    """
    batch, channels, height, width = images.shape
    frame = torch.tensor(fill or [0.0], device=images.device)
    frame = (frame if images.is_floating_point() else frame.round()).to(images.dtype).view(1, -1, 1, 1)
    framed = frame.expand(batch, channels, height + 2, width + 2).clone()
    framed[:, :, 1:-1, 1:-1] = images
    col = col.round_().clamp_(-1, width).add_(1)                              # framed coordinates
    index = row.round_().clamp_(-1, height).add_(1).mul_(width + 2).add_(col).long()
    pixels = framed.flatten(2).gather(2, index.view(batch, 1, -1).expand(-1, channels, -1))
    return pixels.view(batch, channels, height, width)


def _color_jitter(step: v2.ColorJitter, images: torch.Tensor) -> torch.Tensor:
    """Each image's own factors, in its own random order (torchvision: `torch.randperm(4)` per image).

    The batch is sorted by order, so images sharing one are adjusted together as a slice, in
    float and in place (the float copy is this function's own); integer images are truncated
    after each adjustment as torchvision's uint8 kernels do (`.to(uint8)`), so the values are
    its values.
    """
    adjustments = [(bounds, adjust) for bounds, adjust in ((step.brightness, _brightness), (step.contrast, _contrast),
                                                           (step.saturation, _saturation), (step.hue, _hue))
                   if bounds is not None]
    count, batch, device = len(adjustments), len(images), images.device
    if not count:
        return images
    factors = [torch.empty(batch, device=device).uniform_(*bounds).view(-1, 1, 1, 1) for bounds, _ in adjustments]
    order = torch.rand(batch, count, device=device).argsort(dim=1)   # a uniform random order per image
    codes, by_code = (order * count ** torch.arange(count, device=device)).sum(dim=1).sort(stable=True)
    # index_select: the same rows as `images[by_code]`, copied whole (many times faster on the CPU)
    out = images.index_select(0, by_code).float()
    factors = [factor.index_select(0, by_code) for factor in factors]
    start = 0
    for code, size in zip(*(part.tolist() for part in codes.unique_consecutive(return_counts=True))):
        group = slice(start, start + size)
        start += size
        for position in range(count):
            index = code // count ** position % count
            adjustments[index][1](out[group], factors[index][group], images.dtype)
    adjusted = out if images.is_floating_point() else out.to(images.dtype)
    return adjusted.index_select(0, by_code.argsort())


def _finish(output: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamped to the range of `dtype`; for an integer dtype truncated, as torchvision's `.to(dtype)` does."""
    if dtype.is_floating_point:
        return output.clamp_(0, 1.0)
    return output.clamp_(0, torch.iinfo(dtype).max).floor_()  # = trunc_ on values >= 0, and many times faster


# The adjustments below change `images` (float, a view of the caller's own copy) in place and
# return it; the arithmetic, and its order, is torchvision's.

def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _finish(images.mul_(ratio).add_(other.mul_(1.0 - ratio)), dtype)


def _gray(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torchvision's grayscale of adjust_contrast / adjust_saturation: floored for integer images."""
    gray = TF.rgb_to_grayscale(images)
    return gray if dtype.is_floating_point else gray.floor_()


def _brightness(images: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _finish(images.mul_(factor), dtype)


def _contrast(images: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _blend(images, _gray(images, dtype).mean(dim=(-3, -2, -1), keepdim=True), factor, dtype)


def _saturation(images: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return images if images.shape[-3] == 1 else _blend(images, _gray(images, dtype), factor, dtype)


def _hue(images: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """adjust_hue's HSV round trip, from and back to `dtype`'s values."""
    if images.shape[-3] == 1:
        return images
    scaled = TF.to_dtype(images.to(dtype), torch.float32, scale=True)
    hue, saturation, value = _rgb_to_hsv(scaled).unbind(dim=-3)
    hue = (hue + factor.view(-1, 1, 1)).remainder(1.0)
    return images.copy_(TF.to_dtype(_hsv_to_rgb(torch.stack((hue, saturation, value), dim=-3)), dtype, scale=True))
