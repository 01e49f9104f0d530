"""What every dataset builder returns, and the pieces builders share."""
from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from hydra.utils import get_method
from torch.utils.data import Dataset

from decltrain.trainer.errors import UserError


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

    `task` is the kind of targets: `multiclass`, `binary`, `multilabel` ((N, labels) floats of 0/1),
    `regression`, or `detection` (a dict of boxes and labels per image); the config's task
    (configs/task/) checks it fits.
    `eval_transform` turns one raw input (a PIL image for image datasets, a string for text, a
    row dict or list for tables) into a model input the way the test split does; `predict` uses
    it on new files. `vocab_size` (text datasets) reaches the model like `num_classes`.
    `any_image_size`: the model takes images of any size (detectors resize inside), so `predict`
    keeps each image's own size and its outputs (boxes) are in that image's pixels.
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
    vocab_size: int | None = None
    any_image_size: bool = False


class SizedDataset(Protocol):
    """A map-style dataset with a length, as every split here is (torch's `Dataset` declares no `__len__`)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...


@runtime_checkable
class EpochStream(Protocol):
    """A training split read as a stream, too large to index (a streamed Hugging Face split).

    The Trainer's loader (trainer/engine/data.py `StreamLoader`) draws `keys` in the training
    process, this rank's share of an epoch after its first `skip` samples (a resumed epoch), and
    loader workers turn each key into a sample (`__getitem__`: decoding, transforms). Every rank
    gets `epoch_samples(num_replicas)` keys, so DDP ranks run the same number of batches.
    """

    def epoch_samples(self, num_replicas: int) -> int: ...
    def keys(self, epoch: int, skip: int, seed: int, num_replicas: int, rank: int) -> Iterator[Any]: ...
    def __getitem__(self, key: Any) -> Any: ...


class TransformedSubset(Dataset):
    """The samples `indices` of `base`, with `transform` applied to each input (targets untouched).

    Train and validation can then share one loaded dataset and still get their own transforms.
    """

    def __init__(self, base: SizedDataset, indices: Sequence[int], transform: Callable[[Any], Any] | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        inputs, target = self.base[self.indices[index]]
        return (self.transform(inputs) if self.transform else inputs), target


class JointlyTransformedSubset(TransformedSubset):
    """A `TransformedSubset` whose `transform` sees each (input, target) pair together.

    transforms.v2 then moves a target's `tv_tensors` (boxes, masks) with its image: a flip or
    crop of the image flips or crops them the same way.
    """

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample = self.base[self.indices[index]]
        return self.transform(sample) if self.transform else sample


def loader_settings(batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                    pin_memory: bool = True, persistent_workers: bool = True, drop_last: bool = False,
                    collate_fn: str | Callable[[list[Any]], Any] | None = None,
                    default_collate_fn: Callable[[list[Any]], Any] | None = None) -> LoaderSettings:
    """LoaderSettings from a dataset config; `collate_fn` may be a dotted path (`my_pkg.collate`)."""
    if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
        raise UserError(f"dataset.batch_size={batch_size} / eval_batch_size={eval_batch_size} must be at least 1")
    if num_workers < 0:
        raise UserError(f"dataset.num_workers={num_workers} must be 0 (load in the main process) or more")
    if isinstance(collate_fn, str):
        try:
            collate_fn = get_method(collate_fn)
        except Exception as err:  # Hydra raises ImportError/ValueError variants for a bad path
            raise UserError(f"dataset.collate_fn={collate_fn!r} is not an importable function ({err})") from None
    return LoaderSettings(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                          pin_memory=pin_memory, persistent_workers=persistent_workers, drop_last=drop_last,
                          collate_fn=collate_fn or default_collate_fn)


def split_indices(count: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """A fixed random partition of `range(count)`: the rest first, then one part per fraction.

    The seed is the dataset's own (`val_split_seed`), not the run's: runs with different seeds
    validate on the same samples, and `evaluate split=val` can rebuild the split.
    """
    if any(not 0.0 < f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise UserError(f"dataset split fractions {list(fractions)} must each lie between 0 and 1 and sum below 1")
    sizes = [max(1, round(count * f)) for f in fractions]
    if count - sum(sizes) < 1:
        raise UserError(f"the dataset has {count} samples: too few to split off {list(fractions)}")
    # torch.utils.data.random_split's order, cut into consecutive parts
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    ends = list(itertools.accumulate([count - sum(sizes), *sizes]))
    return [order[start:end] for start, end in zip([0, *ends], ends)]


def carve_splits(train: SizedDataset, val: SizedDataset | None, test: SizedDataset | None, val_fraction: float,
                 test_fraction: float, seed: int) -> tuple[TransformedSubset, TransformedSubset, TransformedSubset]:
    """Train, val and test parts without transforms; a missing val or test is carved from `train` by its fraction."""
    missing = [fraction for split, fraction in ((val, val_fraction), (test, test_fraction)) if split is None]
    rest, *carved = split_indices(len(train), missing, seed) if missing else [list(range(len(train)))]
    val_part, test_part = (TransformedSubset(train, carved.pop(0), None) if split is None
                           else TransformedSubset(split, range(len(split)), None) for split in (val, test))
    return TransformedSubset(train, rest, None), val_part, test_part


# Samples per split (train, val, test) that `dataset.fake=true` generates: enough for a few steps.
FAKE_SIZES = (128, 32, 32)


def read_csv_rows(path: str | Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, after checking it holds `columns` and at least one row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: CSV file {path.resolve()} does not exist; set dataset.path to your file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in columns if column not in header]
        if missing:
            raise UserError(f"{what}: {path} has no column {', '.join(map(repr, missing))} (its columns: "
                            f"{', '.join(header)}); name your columns in the dataset's settings, "
                            "e.g. dataset.target=<column>")
        rows = list(reader)
    if not rows:
        raise UserError(f"{what}: {path} has a header but no rows")
    return rows


def describe_missing_data(root: str | Path, what: str) -> str:
    """The one-line message for a dataset that is neither on disk nor downloadable."""
    return (f"{what} not found under {Path(root).resolve()} and could not be downloaded; "
            f"place the files there, or set DATA_DIR to the folder that holds them "
            f"(e.g. DATA_DIR=../shared/data)")
