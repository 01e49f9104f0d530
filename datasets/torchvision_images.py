"""torchvision's built-in image datasets (MNIST, FashionMNIST, CIFAR-10), normalised by their configs' mean and std."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchvision

from decltrain.datasets.base import DataSplits, describe_missing_data, loader_settings
from decltrain.datasets.images import fake_images, image_pipeline, image_splits
from decltrain.datasets.in_memory import decode_images
from decltrain.trainer.errors import UserError

# Image shape (C, H, W) and class names of the datasets `fake=true` can stand in for without files.
KNOWN = {
    "MNIST": ((1, 28, 28), torchvision.datasets.MNIST.classes),
    "FashionMNIST": ((1, 28, 28), torchvision.datasets.FashionMNIST.classes),
    "CIFAR10": ((3, 32, 32), ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                              "truck"]),
}


def build(name: str, root: str, mean: list[float], std: list[float],
          train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, download: bool = True,
          val_fraction: float = 0.1, val_split_seed: int = 0, fake: bool = False, in_memory: bool = True,
          **loader: Any) -> DataSplits:
    """Loads torchvision's `name` from `root` (downloading it when allowed), or fakes it with `fake`.

    `in_memory` decodes the images once and batches them on the training device (the fast
    path); false runs the transforms per sample in the DataLoader (and its workers).

    `loader` holds the loader settings (batch_size, eval_batch_size, num_workers, pin_memory,
    persistent_workers, drop_last, collate_fn); see `datasets.base.loader_settings`.
    """
    dataset_class = getattr(torchvision.datasets, name, None)
    if dataset_class is None:
        raise UserError(f"dataset.name={name!r} is not a torchvision dataset")
    if fake:
        if name not in KNOWN:
            raise UserError(f"dataset.fake=true knows the shapes of {', '.join(KNOWN)} only, not {name}")
        shape, class_names = KNOWN[name]
        train, val, test = fake_images(shape, len(class_names))
    else:
        try:
            train = dataset_class(root, train=True, download=download)
            test = dataset_class(root, train=False, download=download)
        except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError for missing files
            raise UserError(describe_missing_data(Path(root) / name, name)) from err
        val, class_names = None, train.classes
    return image_splits(train, val, test, class_names=[str(c) for c in class_names],
                        train_transform=image_pipeline(train_transforms, mean, std),
                        eval_transform=image_pipeline(eval_transforms, mean, std), val_fraction=val_fraction,
                        val_split_seed=val_split_seed, name=name, loader=loader_settings(**loader),
                        decode=decode_images if in_memory else None)
