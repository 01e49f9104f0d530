"""torchvision's built-in image datasets (MNIST family, CIFAR-10), normalised as in the seeds."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from datasets.base import DataSplits, LoaderSettings, carve_validation, describe_missing_data
from trainer.errors import UserError


def build(name: str, root: str, mean: list[float], std: list[float], download: bool = True,
          val_fraction: float = 0.1, val_split_seed: int = 0, batch_size: int = 64,
          eval_batch_size: int | None = None, num_workers: int = 0) -> DataSplits:
    """Loads torchvision's `name` (e.g. MNIST) from `root`, downloading it when allowed."""
    dataset_class = getattr(torchvision.datasets, name, None)
    if dataset_class is None:
        raise UserError(f"dataset.name={name!r} is not a torchvision dataset")
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    try:
        train = dataset_class(root, train=True, download=download, transform=transform)
        test = dataset_class(root, train=False, download=download, transform=transform)
    except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError for missing files
        raise UserError(describe_missing_data(Path(root) / name, name)) from err
    train_part, val_part = carve_validation(train, val_fraction, val_split_seed)
    image, _ = train[0]
    return DataSplits(
        train=train_part, val=val_part, test=test,
        num_classes=len(train.classes), input_shape=tuple(image.shape),
        class_names=[str(c) for c in train.classes], task="multiclass", name=name, eval_transform=transform,
        loader=LoaderSettings(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers),
    )
