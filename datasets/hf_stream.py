"""`dataset=hf dataset.streaming=true`: a Hugging Face split read as a stream, for data too large to download first.

The training split is never indexed. Each epoch reads the stream from its start, shuffled by
Hugging Face's buffer shuffle (`shuffle(seed, buffer_size)` with `set_epoch`: the order depends on
the run's seed and the epoch alone). Rank r of w keeps rows r, r + w, ... up to
`samples_per_epoch // w`, so every rank runs the same number of batches (no DDP hang); every rank
reads the whole stream but decodes only its own rows, and loader workers split a rank's rows by
whole batches. Random transforms are seeded per sample by (seed, epoch, position).

Resume: checkpoints record (epoch, batch) for every dataset. A resumed epoch reads its stream
again from the start, with the same shuffle, and skips the rows already trained without decoding
them: the resumed run sees exactly the samples of the uninterrupted one, at the cost of reading
past them again (the run logs how many). The dataset's own `state_dict()` is not used: it leaves
the shuffle buffer out, so a run resumed from it would see other samples than the uninterrupted one.

Validation and test: up to `eval_samples` rows of the dataset's own splits, read into memory; a
split the data lacks is the first rows of the training stream, which training then skips.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from decltrain.datasets.base import DataSplits, TransformedSubset, loader_settings
from decltrain.datasets.hf_rows import HFRows, RowSample, hf_datasets, label_kind
from decltrain.datasets.images import required_pipelines
from decltrain.trainer.errors import UserError

log = logging.getLogger("decltrain")


class StreamedRows(Dataset):
    """A streamed split, an `EpochStream`: rows (still encoded) are drawn in the training process,
    loader workers decode and transform them."""

    def __init__(self, stream: Any, sample: RowSample, transform: Callable[[Any], Any] | None,
                 samples_per_epoch: int, shuffle_buffer: int) -> None:
        self.stream, self.sample, self.transform = stream, sample, transform
        self.samples_per_epoch, self.shuffle_buffer = samples_per_epoch, shuffle_buffer

    def epoch_samples(self, num_replicas: int) -> int:
        return self.samples_per_epoch // num_replicas

    def keys(self, epoch: int, skip: int, seed: int, num_replicas: int, rank: int) -> Iterator[tuple[Any, int]]:
        """This rank's rows of `epoch` after its first `skip`, each with the seed of its random transforms."""
        if skip:
            log.info("streamed dataset: epoch %d resumes after %d samples of this rank; its stream is read again "
                     "from the start (same order) and those rows skipped without decoding", epoch + 1, skip)
        stream = self.stream.shuffle(seed=seed, buffer_size=self.shuffle_buffer)
        stream.set_epoch(epoch)
        share = self.epoch_samples(num_replicas)
        position = -1
        for row_number, row in enumerate(stream):
            if row_number % num_replicas != rank:
                continue
            position = row_number // num_replicas  # in this rank's share
            if position >= share:
                return
            if position >= skip:
                yield row, hash((seed, epoch, position)) % 2**32
        raise UserError(f"dataset.samples_per_epoch={self.samples_per_epoch} is more than the stream holds (rank "
                        f"{rank} ran out after {position + 1} of its {share} samples); lower it")

    def __getitem__(self, key: tuple[Any, int]) -> tuple[Any, Any]:
        row, seed = key
        if get_worker_info() is not None:  # random transforms drawn from the sample's own seed (a worker's RNG only)
            _seed(seed)
        inputs, target = self.sample(row)
        return (self.transform(inputs) if self.transform else inputs), target


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def streamed_splits(loaded: Mapping[str, Any], roles: Mapping[str, Any], *, label: str, image_mode: str | None,
                    samples_per_epoch: int | None, shuffle_buffer: int, eval_samples: int,
                    mean: list[float] | None, std: list[float] | None,
                    train_transforms: list[Callable[[Any], Any]] | None,
                    eval_transforms: list[Callable[[Any], Any]] | None, loader: dict[str, Any]) -> DataSplits:
    """Train as a `StreamedRows`, val and test read into memory (carved from the stream's start when missing)."""
    library = hf_datasets()
    sample = RowSample(roles, image_mode)
    if sample.role == "text":
        raise UserError("dataset.streaming=true reads image or features columns; text needs its vocabulary "
                        "from the whole training split: use dataset.streaming=false")
    train = loaded["train"].select_columns([*sample.inputs, sample.label])
    tables = {}
    for split in ("val", "test"):
        source = train if loaded[split] is None else loaded[split].select_columns([*sample.inputs, sample.label])
        tables[split] = library.Dataset.from_list(list(source.take(eval_samples)), features=source.features)
        if loaded[split] is None:
            train = train.skip(eval_samples)
    task, class_names = label_kind(tables["val"], sample.label)
    if samples_per_epoch is None:
        raise UserError("dataset.streaming=true needs dataset.samples_per_epoch (the training rows one epoch reads: "
                        "a stream does not know its size)")
    if sample.role == "image":
        train_pipeline, eval_pipeline = required_pipelines(train_transforms, eval_transforms, mean, std, "dataset=hf")
        transforms: tuple[Any, Any] = (train_pipeline.per_sample(), eval_pipeline.per_sample())
    else:
        transforms = (None, None)
    val, test = (TransformedSubset(HFRows(tables[split], roles, image_mode, f"{label} {split}"),
                                   range(len(tables[split])), transforms[1]) for split in ("val", "test"))
    image, _ = test[0]
    return DataSplits(train=StreamedRows(train.decode(False), sample, transforms[0], samples_per_epoch, shuffle_buffer),
                      val=val, test=test, num_classes=len(class_names) or 1, input_shape=tuple(image.shape),
                      loader=loader_settings(**loader), class_names=class_names, task=task, name=label,
                      eval_transform=transforms[1])
