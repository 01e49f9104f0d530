"""Datasets that fit in memory, decoded once into tensors and batched by index on the device.

The Trainer feeds an `InMemory` split through `trainer.data.DeviceTensorLoader`: no per-sample
Python, no PIL, no collation. Image splits keep their uint8 pixels and a `BatchTransform` that
applies the configured augmentation and normalization to a whole batch, with its own random draw
for every sample, so batches match the per-sample pipeline in distribution. Random draws come
from the global torch RNG (of the batch's device), which checkpoints save, so resume stays exact.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from decltrain.datasets.base import SizedDataset


class BatchTransform:
    """`steps` (transforms.v2, as in the config) then ToDtype(float, scale) + Normalize, on (B, C, H, W) uint8.

    Flips and padded random crops run vectorized with one draw per sample; any other step runs
    on each image of the batch in turn (still without decoding or collating).
    """

    def __init__(self, steps: Sequence[Callable[[Any], Any]], mean: Sequence[float], std: Sequence[float]) -> None:
        self.steps = list(steps)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            images = _apply(step, images)
        return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), self.mean, self.std)


def _apply(step: Any, images: torch.Tensor) -> torch.Tensor:  # a v2 transform: torchvision is untyped
    if type(step) in (v2.RandomHorizontalFlip, v2.RandomVerticalFlip):
        flip = torch.rand(len(images), device=images.device) < step.p
        flipped = images.flip(-1 if isinstance(step, v2.RandomHorizontalFlip) else -2)
        return torch.where(flip.view(-1, 1, 1, 1), flipped, images)
    if type(step) is v2.RandomCrop and not step.pad_if_needed and not isinstance(step.fill, dict):
        return _random_crop(images, step)
    return torch.stack([step(image) for image in images])


def _random_crop(images: torch.Tensor, step: v2.RandomCrop) -> torch.Tensor:
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


class InMemory(Dataset):
    """Inputs and targets as tensors; `transform` turns a batch of inputs into model inputs.

    Indexing one sample works (and runs the transform on a batch of one), so code written for
    map-style datasets still works; the Trainer uses `batch` instead.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.batch(torch.tensor([index]))
        return inputs[0], targets[0]

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples `indices` (a tensor on this dataset's device), transformed as one batch."""
        inputs = self.inputs[indices]
        return (self.transform(inputs) if self.transform else inputs), self.targets[indices]

    def subset(self, indices: Sequence[int], transform: Callable[[torch.Tensor], torch.Tensor] | None) -> InMemory:
        """The samples `indices` with their own transform (e.g. validation carved from training)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return InMemory(self.inputs[index], self.targets[index], transform)

    def to(self, device: torch.device) -> InMemory:
        if self.device == device:
            return self
        return InMemory(self.inputs.to(device), self.targets.to(device), self.transform)


def decode_images(dataset: SizedDataset) -> InMemory:
    """Every (image, label) of an untransformed image dataset as uint8 (N, C, H, W) and int64 (N,).

    torchvision's MNIST-style (uint8 tensor N, H, W) and CIFAR-style (uint8 array N, H, W, C)
    `data` attributes are taken as they are; anything else is decoded sample by sample, once.
    """
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if targets is not None and isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.ndim == 3:
        images = data.unsqueeze(1)
    elif targets is not None and getattr(data, "dtype", None) == "uint8" and getattr(data, "ndim", 0) == 4:
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    else:
        pairs = [dataset[i] for i in range(len(dataset))]
        images = torch.stack([TF.to_image(image).as_subclass(torch.Tensor) for image, _ in pairs])
        targets = [target for _, target in pairs]
    return InMemory(images.contiguous(), torch.as_tensor(targets, dtype=torch.long))
