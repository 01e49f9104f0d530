"""What every dataset builder returns, and the pieces builders share."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset, random_split


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are drawn; the Trainer builds the DataLoaders (it owns samplers and devices)."""
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    drop_last: bool = False
    collate_fn: Callable[[list[Any]], Any] | None = None


@dataclass
class DataSplits:
    """Train, validation and test sets with the metadata a model is built from.

    `task` is `multiclass`, `binary` or `regression`; it chooses the metrics.
    `eval_transform` turns one raw input (a PIL image for image datasets) into a model input the
    way the test split does; `predict` uses it on new files.
    """
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    class_names: list[str] = field(default_factory=list)
    task: str = "multiclass"
    name: str = ""
    eval_transform: Callable[[Any], Any] | None = None


def carve_validation(train: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Splits a validation set off the training set with its own fixed seed.

    The split does not depend on the run's seed, so runs with different seeds validate on the
    same samples and `evaluate split=val` can rebuild it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction must be between 0 and 1, got {val_fraction}")
    n_val = max(1, round(len(train) * val_fraction))
    generator = torch.Generator().manual_seed(seed)
    train_part, val_part = random_split(train, [len(train) - n_val, n_val], generator=generator)
    return train_part, val_part


def describe_missing_data(root: str | Path, what: str) -> str:
    """The one-line message for a dataset that is neither on disk nor downloadable."""
    return (f"{what} not found under {Path(root).resolve()} and could not be downloaded; "
            f"place the files there, or set DATA_DIR to the folder that holds them "
            f"(e.g. DATA_DIR=../shared/data)")
