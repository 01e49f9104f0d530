"""What `predict` and `export-model` need of a run's data, kept in the run folder at training time.

Without it they rebuild the whole dataset (which needs the training data where the run's config
says) only to learn the class names, the input shape, the evaluation transform (tokenizer or
vocabulary included) and how batches are collated. `<run>/inference.pt` holds the run's
`DataSplits` with these, its splits replaced by a few test samples (the model-fit check's input and
export's check batch), so a run folder copied to another machine predicts and exports there.
`evaluate` still rebuilds its split. The file is a pickle (the transform is code): load only run
folders you trust, as with any checkpoint read with `weights_only=False`.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from decltrain.datasets.base import DataSplits, SizedDataset
from decltrain.trainer.errors import first_line
from decltrain.trainer.runs import layout

SAMPLES = 4  # more than export's example batch of 2, so its check batch has another size
log = logging.getLogger("decltrain")


class Samples(Dataset):
    """A few (input, target) pairs of a split, already transformed."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def write(splits: DataSplits, run_dir: Path) -> None:
    """Saves the record; a transform that cannot be pickled (a lambda) leaves the commands rebuilding the data."""
    test: SizedDataset = splits.test  # type: ignore[assignment]  # every split a run trains with is sized
    samples = Samples([test[index] for index in range(min(SAMPLES, len(test)))])
    record = dataclasses.replace(splits, train=samples, val=samples, test=samples)
    path = run_dir / layout.INFERENCE
    try:
        torch.save(record, path)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        path.unlink(missing_ok=True)
        log.warning("predict and export-model will need this run's data: its dataset's transform or collate "
                    "function cannot be saved in %s (%s)", path, first_line(err))


def data_overridden(overrides: list[str]) -> bool:
    """Overrides of the run's `dataset` (`dataset.eval_batch_size=8`): then the data is rebuilt, not read from the record."""
    return any(override.lstrip("+~").split("=", 1)[0].split(".")[0] == "dataset" for override in overrides)


def read(run_dir: Path) -> DataSplits | None:
    """The record of a run folder, None for runs trained before it was written (or without it)."""
    path = run_dir / layout.INFERENCE
    if not path.is_file():
        return None
    record = torch.load(path, weights_only=False)  # the run's own transform objects
    return record if isinstance(record, DataSplits) else None
