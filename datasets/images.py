"""What the image builders share: transforms.v2 pipelines from config, and splits from loaded images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FakeData
from torchvision.transforms import v2

from decltrain.datasets.base import FAKE_SIZES, DataSplits, LoaderSettings, TransformedSubset, split_indices
from decltrain.datasets.in_memory import BatchTransform, InMemory, decode_images


def image_pipeline(steps: Sequence[Callable[[Any], Any]] | None, mean: Sequence[float],
                   std: Sequence[float]) -> v2.Compose:
    """The config's transforms between the fixed ends: to a tensor image, then float in [0, 1], normalized.

    `steps` (from YAML, e.g. RandomResizedCrop, RandomHorizontalFlip, ColorJitter) therefore
    see a uint8 image, and every pipeline ends in the same normalized float tensor.
    """
    return v2.Compose([v2.ToImage(), *(steps or []), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


def fake_images(image_shape: Sequence[int], num_classes: int) -> tuple[Dataset, Dataset, Dataset]:
    """Train, val and test sets of random PIL images of `image_shape` (C, H, W) with random labels."""
    offsets = (0, FAKE_SIZES[0], FAKE_SIZES[0] + FAKE_SIZES[1])  # distinct samples in each split
    return tuple(FakeData(size, tuple(image_shape), num_classes, random_offset=offset)  # type: ignore[return-value]
                 for size, offset in zip(FAKE_SIZES, offsets))


def image_splits(train: Dataset, val: Dataset | None, test: Dataset | None, *, class_names: list[str],
                 train_transform: v2.Compose, eval_transform: v2.Compose, val_fraction: float,
                 val_split_seed: int, name: str, loader: LoaderSettings,
                 decode: Callable[[Dataset], InMemory] | None = None) -> DataSplits:
    """Splits from untransformed image datasets; without `val`, it is carved from `train`.

    A carved validation set shares the loaded training images but gets the evaluation
    transform, so it is never augmented. Without `test`, the validation set is also tested.
    With `decode` (e.g. `decode_images`, or the image-folder cache), every split is decoded once
    into uint8 images (datasets/in_memory.py) and transformed per batch on the training device,
    by the same steps and normalization.
    """
    part = TransformedSubset if decode is None else _in_memory_part
    if decode is not None:
        train, val, test = (None if split is None else decode(split) for split in (train, val, test))
    if val is None:
        train_indices, val_indices = split_indices(len(train), [val_fraction], val_split_seed)
        train_part = part(train, train_indices, train_transform)
        val_part = part(train, val_indices, eval_transform)
    else:
        train_part = part(train, range(len(train)), train_transform)
        val_part = part(val, range(len(val)), eval_transform)
    test_part = val_part if test is None else part(test, range(len(test)), eval_transform)
    image, _ = test_part[0]
    return DataSplits(train=train_part, val=val_part, test=test_part, num_classes=len(class_names),
                      input_shape=tuple(image.shape), loader=loader, class_names=class_names, task="multiclass",
                      name=name, eval_transform=eval_transform)


def _in_memory_part(decoded: InMemory, indices: Sequence[int], pipeline: v2.Compose) -> InMemory:
    """The samples `indices` with `pipeline` (as built by `image_pipeline`) applied per batch."""
    steps, normalize = pipeline.transforms[1:-2], pipeline.transforms[-1]  # between ToImage and ToDtype
    return decoded.subset(indices, BatchTransform(steps, normalize.mean, normalize.std))
