"""Synthetic data every working training loop can learn, and the real MNIST subset's pixels."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits, LoaderSettings


def synthetic_splits(n: int = 256, features: int = 8, classes: int = 3, batch_size: int = 16,
                     seed: int = 0) -> DataSplits:
    """Linearly separable blobs: any working loop learns them in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 3

    def split(count: int) -> TensorDataset:
        labels = torch.randint(0, classes, (count,), generator=generator)
        return TensorDataset(centers[labels] + torch.randn(count, features, generator=generator), labels)

    return DataSplits(train=split(n), val=split(n // 4), test=split(n // 4), num_classes=classes,
                      input_shape=(features,), loader=LoaderSettings(batch_size=batch_size), name="blobs")


def mnist_pixels(data_dir: Path, train: bool) -> torch.Tensor:
    """The MNIST subset's training or test images, (N, 28, 28) pixels in [0, 1], as its files hold them."""
    import torchvision

    return torchvision.datasets.MNIST(str(data_dir), train=train).data.float() / 255
