"""What the image builders share: transforms.v2 pipelines from config, and splits from loaded images."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FakeData
from torchvision.transforms import v2

from decltrain.datasets.base import FAKE_SIZES, DataSplits, LoaderSettings, SizedDataset, TransformedSubset, split_indices
from decltrain.datasets.in_memory import BatchTransform, InMemory
from decltrain.trainer.errors import UserError


@dataclass(frozen=True)
class ImagePipeline:
    """The config's transforms (`steps`) between fixed ends, kept apart so each path builds its own form.

    `steps` (from YAML, e.g. RandomResizedCrop, RandomHorizontalFlip, ColorJitter) see a uint8
    image; every pipeline ends in the same float tensor in [0, 1], normalized by `mean`, `std`.
    """
    steps: tuple[Callable[[Any], Any], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def per_sample(self) -> v2.Compose:
        """One image (PIL or tensor) at a time: to a tensor image, the steps, float, normalized."""
        return v2.Compose([v2.ToImage(), *self.steps, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])

    def per_batch(self) -> BatchTransform:
        """The same on a (B, C, H, W) uint8 batch on the training device (datasets/in_memory.py)."""
        return BatchTransform(self.steps, self.mean, self.std)


def image_pipeline(steps: Sequence[Callable[[Any], Any]] | None, mean: Sequence[float],
                   std: Sequence[float]) -> ImagePipeline:
    return ImagePipeline(tuple(steps or ()), tuple(mean), tuple(std))


def required_pipelines(train_steps: Sequence[Callable[[Any], Any]] | None,
                       eval_steps: Sequence[Callable[[Any], Any]] | None, mean: Sequence[float] | None,
                       std: Sequence[float] | None, what: str) -> tuple[ImagePipeline, ImagePipeline]:
    """The train and eval pipelines of a builder whose data decides the normalization (no default mean, std)."""
    if mean is None or std is None:
        raise UserError(f"{what} of images needs dataset.mean and dataset.std (one value per channel), "
                        "e.g. dataset.mean=[0.5,0.5,0.5] dataset.std=[0.5,0.5,0.5]")
    return image_pipeline(train_steps, mean, std), image_pipeline(eval_steps, mean, std)


def fake_images(image_shape: Sequence[int], num_classes: int) -> tuple[SizedDataset, SizedDataset, SizedDataset]:
    """Train, val and test sets of random PIL images of `image_shape` (C, H, W) with random labels."""
    train, val, test = (FakeData(size, tuple(image_shape), num_classes, random_offset=offset)
                        for size, offset in zip(FAKE_SIZES, (0, FAKE_SIZES[0], FAKE_SIZES[0] + FAKE_SIZES[1])))
    return train, val, test  # distinct samples in each split (the offsets)


def image_splits(train: SizedDataset, val: SizedDataset | None, test: SizedDataset | None, *, class_names: list[str],
                 train_transform: ImagePipeline, eval_transform: ImagePipeline, val_fraction: float,
                 val_split_seed: int, name: str, loader: LoaderSettings,
                 decode: Callable[[SizedDataset], InMemory] | None = None,
                 test_fraction: float | None = None, task: str = "multiclass") -> DataSplits:
    """Splits from untransformed image datasets; without `val`, it is carved from `train`.

    A carved validation set shares the loaded training images but gets the evaluation
    transform, so it is never augmented. Without `test`, a test set of `test_fraction` is carved
    from `train` too, or without that fraction the validation set is also tested.
    With `decode` (e.g. `decode_images`, or the image-folder cache), every split is decoded once
    into uint8 images (datasets/in_memory.py) and transformed per batch on the training device,
    by the same steps and normalization.
    """
    transforms = (train_transform, eval_transform, val_fraction, val_split_seed, test_fraction)
    if decode is None:
        train_part, val_part, test_part = split_parts(train, val, test, _per_sample_part, *transforms)
    else:
        val_images, test_images = (None if split is None else decode(split) for split in (val, test))
        train_part, val_part, test_part = split_parts(decode(train), val_images, test_images, _in_memory_part, *transforms)
    image, _ = test_part[0]
    return DataSplits(train=train_part, val=val_part, test=test_part, num_classes=len(class_names),
                      input_shape=tuple(image.shape), loader=loader, class_names=class_names, task=task,
                      name=name, eval_transform=eval_transform.per_sample())


Split = TypeVar("Split", bound=SizedDataset)


def split_parts(train: Split, val: Split | None, test: Split | None,
           part: Callable[[Split, Sequence[int], ImagePipeline], Dataset], train_transform: ImagePipeline,
           eval_transform: ImagePipeline, val_fraction: float, val_split_seed: int,
           test_fraction: float | None = None) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test parts of loaded (or decoded) splits; see `image_splits`."""
    carve_test = test is None and test_fraction is not None
    fractions = [fraction for fraction, missing in ((val_fraction, val is None), (test_fraction, carve_test))
                 if missing and fraction is not None]
    rest, *carved = split_indices(len(train), fractions, val_split_seed) if fractions else [range(len(train))]

    def whole_or_carved(split: Split | None) -> Dataset:
        return part(train, carved.pop(0), eval_transform) if split is None else part(split, range(len(split)),
                                                                                      eval_transform)

    val_part = whole_or_carved(val)
    test_part = whole_or_carved(test) if test is not None or carve_test else val_part
    return part(train, rest, train_transform), val_part, test_part


def _per_sample_part(images: SizedDataset, indices: Sequence[int], pipeline: ImagePipeline) -> TransformedSubset:
    return TransformedSubset(images, indices, pipeline.per_sample())


def _in_memory_part(decoded: InMemory, indices: Sequence[int], pipeline: ImagePipeline) -> InMemory:
    return decoded.subset(indices, pipeline.per_batch())
