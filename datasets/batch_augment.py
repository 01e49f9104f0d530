"""Batched forms of transforms.v2 steps: one call on a (B, C, H, W) batch, one random draw per image.

`batch_form(step)` is the step as one batched call, or None where there is none (the caller then
runs the step image by image). Each form draws its parameters as torchvision's `make_params`
does, but for the whole batch at once from the global RNG of the batch's device (checkpoints
save it, so resume stays exact), and computes what torchvision's tensor kernels compute, with
each image's own parameters:

- Resize, CenterCrop, Pad, Grayscale have no randomness: torchvision's kernels take a batch.
- RandomHorizontalFlip, RandomVerticalFlip, RandomCrop (without pad_if_needed): exact.
- RandomResizedCrop (bilinear): torchvision's crop boxes (10 tries of area scale and log aspect
  ratio, else the centre crop) and its bilinear sampling positions, in one `grid_sample`.
  torchvision low-pass filters a crop larger than the output (antialias); here each output pixel
  averages k x k bilinear samples spread to the same variance as torchvision's filter, with k
  from the largest possible shrink (k = 1, plain bilinear, up to a shrink of 1.22: the shipped
  recipe, 258-pixel cache to 224, shrinks by at most 1.15).
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
    if kind is v2.RandomResizedCrop and _mode(step.interpolation) == "bilinear":
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
    flip = torch.rand(len(images), device=images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(dim), images)


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
    batch, _, height, width = images.shape
    top, left, box_h, box_w = crop_boxes(step, batch, height, width, images.device)
    return _resized_crops(images, top, left, box_h, box_w, tuple(step.size))


def _resized_crops(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, box_h: torch.Tensor,
                  box_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Box i of image i resized to `size` (bilinear, antialiased when shrinking), all in one `grid_sample`.

    An output pixel's centre maps to the source position torchvision's bilinear resize uses,
    clamped to the box. Shrinking by p (source pixels per output pixel), torchvision filters with
    a triangle of half-width p (variance p^2 / 6); bilinear sampling is a triangle of half-width 1,
    so k samples spread over a width of sqrt(2 (p^2 - 1)) add the missing variance (none at p <= 1).
    """
    out_h, out_w = size
    most = max(images.shape[-2] / out_h, images.shape[-1] / out_w)  # the largest shrink any box can need
    k = max(1, math.ceil(math.sqrt(2 * max(most ** 2 - 1, 0.0)) - 1e-9))
    rows = _positions(top, box_h, out_h, k, images.shape[-2])            # (B, out_h * k), normalized
    cols = _positions(left, box_w, out_w, k, images.shape[-1])           # (B, out_w * k)
    grid = torch.stack(torch.broadcast_tensors(cols[:, None, :], rows[:, :, None]), dim=-1)
    floats = images if images.is_floating_point() else images.float()
    out = F.grid_sample(floats, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out if images.is_floating_point() else out.round_().to(images.dtype)


def _positions(start: torch.Tensor, extent: torch.Tensor, out: int, k: int, full: int) -> torch.Tensor:
    """Sampling positions along one axis, k per output pixel, as grid_sample's [-1, 1] coordinates of `full`."""
    pitch = (extent.float() / out)[:, None]                                         # source pixels per output pixel
    spread = torch.sqrt(torch.clamp(2 * (pitch ** 2 - 1), min=0.0))
    offsets = ((torch.arange(k, device=start.device) + 0.5) / k - 0.5)              # (k,) over [-0.5, 0.5]
    centres = (torch.arange(out, device=start.device) + 0.5)[:, None] * pitch[:, :, None] - 0.5  # (B, out, 1)
    source = centres + offsets * spread[:, :, None]                                 # (B, out, k)
    low = start[:, None, None].float()
    source = torch.minimum(torch.maximum(source + low, low), low + extent[:, None, None].float() - 1)
    return ((2 * source + 1) / full - 1).flatten(1)


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

    Zeros (or `fill`) where the nearest source pixel (rounded half to even, as grid_sample) is outside.
    """
    batch, channels, height, width = images.shape
    col, row = col.round(), row.round()
    inside = (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
    index = torch.where(inside, row * width + col, height * width).long()  # outside: the fill pixel appended below
    outside = torch.tensor(fill or [0.0], device=images.device)
    outside = (outside if images.is_floating_point() else outside.round()).to(images.dtype)
    pixels = torch.cat([images.flatten(2), outside.view(1, -1, 1).expand(batch, channels, 1)], dim=2)
    return pixels.gather(2, index.view(batch, 1, -1).expand(-1, channels, -1)).view(batch, channels, *col.shape[1:])


def _color_jitter(step: v2.ColorJitter, images: torch.Tensor) -> torch.Tensor:
    """Each image's own factors, in its own random order (torchvision: `torch.randperm(4)` per image).

    Images sharing an order are adjusted together, in float; integer images are truncated after
    each adjustment as torchvision's uint8 kernels do (`.to(uint8)`), so the values are its values.
    """
    adjustments = [(bounds, adjust) for bounds, adjust in ((step.brightness, _brightness), (step.contrast, _contrast),
                                                           (step.saturation, _saturation), (step.hue, _hue))
                   if bounds is not None]
    count, batch, device = len(adjustments), len(images), images.device
    if not count:
        return images
    factors = [torch.empty(batch, device=device).uniform_(*bounds).view(-1, 1, 1, 1) for bounds, _ in adjustments]
    order = torch.rand(batch, count, device=device).argsort(dim=1)   # a uniform random order per image
    codes = (order * count ** torch.arange(count, device=device)).sum(dim=1)
    out = images.float() if not images.is_floating_point() else images.clone()
    for code in codes.unique().tolist():
        rows = codes == code
        group = out[rows]
        for position in range(count):
            index = code // count ** position % count
            group = adjustments[index][1](group, factors[index][rows], images.dtype)
        out[rows] = group
    return out if images.is_floating_point() else out.to(images.dtype)


def _finish(output: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamped to the range of `dtype`; for an integer dtype truncated, as torchvision's `.to(dtype)` does."""
    if dtype.is_floating_point:
        return output.clamp_(0, 1.0)
    return output.clamp_(0, torch.iinfo(dtype).max).floor_()  # = trunc_ on values >= 0, and many times faster


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _finish(images.mul(ratio).add_(other * (1.0 - ratio)), dtype)


def _gray(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torchvision's grayscale of adjust_contrast / adjust_saturation: floored for integer images."""
    gray = TF.rgb_to_grayscale(images)
    return gray if dtype.is_floating_point else gray.floor_()


def _brightness(images: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _finish(images.mul(factor), dtype)


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
    return TF.to_dtype(_hsv_to_rgb(torch.stack((hue, saturation, value), dim=-3)), dtype, scale=True).float()
