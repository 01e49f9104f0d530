"""Datasets that fit in memory, decoded once into tensors and batched by index on the device.

The Trainer feeds an `InMemory` split through `trainer.engine.data.DeviceTensorLoader`: no
per-sample Python, no PIL, no collation. Image splits keep their uint8 pixels and a
`BatchTransform` that applies the configured augmentation and normalization to a whole batch,
with its own random draw for every sample, so batches match the per-sample pipeline in
distribution. Random draws come from the global torch RNG (of the batch's device), which
checkpoints save, so resume stays exact. (A dataset with `batch_in_workers`, the image cache, is
augmented in loader workers instead when training on the CPU: trainer/engine/data.py.)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from decltrain.datasets.base import SizedDataset
from decltrain.datasets.batch_augment import batch_form


class BatchTransform:
    """`steps` (transforms.v2, as in the config) then ToDtype(float, scale) + Normalize, on (B, C, H, W) uint8.

    Each step runs in its batched form (datasets/batch_augment.py: one call, a draw per image);
    a step without one runs on each image of the batch in turn (still without decoding or collating).
    """

    def __init__(self, steps: Sequence[Callable[[Any], Any]], mean: Sequence[float], std: Sequence[float]) -> None:
        self.forms = [_form(step) for step in steps]
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.finish(self.augment(images))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The steps alone: the batch stays uint8, a quarter of the bytes of the float batch `finish` makes.

        It comes out contiguous (the image cache's batches start channels-last): `finish`
        normalizes per channel, several times faster in that layout, and models expect it.
        """
        for form in self.forms:
            images = form(images)
        return images.contiguous()

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        # In place on the float copy: each fresh batch-sized tensor costs its page faults on the CPU.
        return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), self.mean, self.std, inplace=True)


def _form(step: Callable[[Any], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    batched = batch_form(step)
    return partial(_each, step) if batched is None else batched


def _each(step: Callable[[Any], Any], images: torch.Tensor) -> torch.Tensor:
    return torch.stack([step(image) for image in images])


class InMemory(Dataset):
    """Inputs and targets as tensors; `transform` turns a batch of inputs into model inputs.

    Indexing one sample works (and runs the transform on a batch of one), so code written for
    map-style datasets still works; the Trainer uses `batch` instead.
    """

    # Whether loader workers should gather and transform whole batches when training on the CPU
    # with `num_workers`: worth a process round trip only where a batch costs more than moving it.
    # Tensors already in memory (MNIST, CIFAR) are batched faster in the training process.
    batch_in_workers = False

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
        inputs, targets = self.batch(torch.tensor([index], device=self.device))  # index_select wants it there
        return inputs[0], targets[0]

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples `indices` (a tensor on this dataset's device), transformed as one batch."""
        inputs, targets = self.augmented_batch(indices)
        return self.finish(inputs), targets

    def augmented_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` before `finish`: what a loader worker hands to the training process."""
        # index_select: `self.inputs[indices]`, but copying whole rows (many times faster on the CPU)
        return self.augment(self.inputs.index_select(0, indices)), self.targets[indices]

    def augment(self, inputs: torch.Tensor) -> torch.Tensor:
        """The transform up to `finish`: a `BatchTransform`'s steps (uint8 stays uint8), any other whole."""
        if isinstance(self.transform, BatchTransform):
            return self.transform.augment(inputs)
        return self.transform(inputs) if self.transform else inputs

    def finish(self, inputs: torch.Tensor) -> torch.Tensor:
        """The rest of the transform after `augment`: a `BatchTransform`'s float conversion and normalization."""
        return self.transform.finish(inputs) if isinstance(self.transform, BatchTransform) else inputs

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
