"""DataLoaders whose order depends only on (seed, epoch), so an epoch can be resumed mid-way.

The training sampler is torch's DistributedSampler (one replica when not distributed) that can
start an epoch part-way: the loop asks the loader for `start_epoch(epoch, skip_batches)`, and on
resume the batches an interrupted epoch already consumed are never loaded. With
loader workers, each training sample's random transforms are seeded by (seed, epoch, sample),
which the sampler hands to the workers with the index: a worker's own random stream, which
persistent workers carry across epochs and a resumed run restarts, is never used. An `InMemory`
dataset is batched by `DeviceTensorLoader` on the training device, except one that asks for
workers (`batch_in_workers`, the image cache) when training on the CPU with `num_workers`: then
each worker gathers and transforms whole batches, seeded by the batch's first sample.
Evaluation shards the split without padding, so metrics reduced over ranks cover every sample
exactly once. A training split that is a stream (`EpochStream`, too large to index) is read by
`StreamLoader`, which hands the stream its position (epoch, samples to skip, rank) each pass.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, TypeGuard

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info

from decltrain.datasets.base import DataSplits, EpochStream, LoaderSettings
from decltrain.datasets.in_memory import InMemory


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch after its first `skip` samples.

    `seeded`: yields (index, seed of this sample in this epoch) for a `SeededSamples` dataset.
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int, num_replicas: int = 1,
                 rank: int = 0, drop_last: bool = False, seeded: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.skip = 0
        self.seeded = seeded

    def start_epoch(self, epoch: int, skip: int) -> None:
        """The next pass is epoch `epoch` (its own order), without its first `skip` samples."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.skip:]
        if self.seeded:  # ints hash the same in every process (no hash randomization for them)
            return iter([(index, hash((self.seed, self.epoch, index)) % 2**32) for index in indices])
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.skip


class SeededSamples(Dataset):
    """`dataset` read by (index, seed) keys: in a loader worker, the seed first seeds python, numpy
    and torch, so the sample's random transforms depend on the key alone."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        _seed_worker(seed)
        return self.dataset[index]


class WorkerBatches(Dataset):
    """An `InMemory` dataset read in loader workers a whole batch per call (`__getitems__`).

    Keys are indices (evaluation), or (index, seed) pairs from a seeded `ResumableSampler`: the
    batch's first seed then seeds the worker before the batch transform draws, so a batch's
    augmentation depends on its place in the epoch alone, as `SeededSamples` does per sample.
    """

    def __init__(self, dataset: InMemory) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if keys and isinstance(keys[0], tuple):
            _seed_worker(keys[0][1])
            keys = [index for index, _ in keys]
        return self.dataset.augmented_batch(torch.as_tensor(keys, dtype=torch.long))


def _seed_worker(seed: int) -> None:
    """Seeds python, numpy and torch in a loader worker; never in the main process, whose RNG checkpoints restore."""
    if get_worker_info() is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def _whole_batch(batch: Any) -> Any:  # DataLoader types a collate function's input as a list of samples
    """The collate function of `WorkerBatches`: its (inputs, targets) come out of `__getitems__` already whole."""
    return batch


class EvalShardSampler(Sampler[int]):
    """Rank r takes samples r, r + world, r + 2*world, ...: no padding, no duplicates."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = range(rank, len(dataset), num_replicas)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableLoader(DataLoader):
    """The training DataLoader: its sampler is a ResumableSampler."""

    def start_epoch(self, epoch: int, skip_batches: int) -> None:
        """The next pass is epoch `epoch`, after its first `skip_batches` batches (a resumed epoch)."""
        _resumable(self.sampler).start_epoch(epoch, skip_batches * (self.batch_size or 1))


class WorkerBatchLoader(ResumableLoader):
    """Workers make whole augmented batches of an `InMemory` dataset (`WorkerBatches`); this process finishes them.

    Workers hand over the uint8 batch and the training process converts and normalizes it:
    moving the float batch, four times the bytes, through shared memory cost more than making it.
    """

    def __init__(self, dataset: InMemory, **settings: Any) -> None:
        super().__init__(WorkerBatches(dataset), collate_fn=_whole_batch, **settings)
        self.finish = dataset.finish

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]  # a generator over DataLoader's
        for inputs, targets in super().__iter__():
            yield self.finish(inputs), targets


class DeviceTensorLoader:
    """Batches of an `InMemory` dataset gathered by index on the device: the fast path.

    It offers what the Trainer uses of a DataLoader (`sampler`, `batch_size`, `len()`,
    `start_epoch`, iteration yielding (inputs, targets)) and walks the same sampler, so the order,
    sharding and mid-epoch start are those of the DataLoader path. The dataset is moved to the
    device once, here; each batch costs one gather and one batched transform.
    """

    def __init__(self, dataset: InMemory, batch_size: int, sampler: Sampler[int], device: torch.device,
                 drop_last: bool) -> None:
        self.dataset = dataset.to(device)
        self.batch_size = batch_size
        self.sampler = sampler  # batch transforms draw from the global RNG, which checkpoints restore
        self.drop_last = drop_last

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def start_epoch(self, epoch: int, skip_batches: int) -> None:
        """As `ResumableLoader.start_epoch`, for a training loader."""
        _resumable(self.sampler).start_epoch(epoch, skip_batches * self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long).to(self.dataset.device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.dataset.batch(order[start:start + self.batch_size])


class StreamLoader:
    """Batches of an `EpochStream`: this rank's share of each epoch, the same count on every rank.

    The stream's keys for the pass are drawn here, in the training process, in order; loader
    workers make the samples. A resumed epoch's trained samples are skipped by the stream itself.
    """

    def __init__(self, stream: EpochStream, settings: LoaderSettings, seed: int, device: torch.device,
                 num_replicas: int = 1, rank: int = 0) -> None:
        self.stream, self.seed = stream, seed
        self.batch_size, self.drop_last = settings.batch_size, settings.drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = self.skip = 0
        assert isinstance(stream, Dataset)
        self.sampler = StreamKeys(self)
        self.loader = DataLoader(stream, batch_size=self.batch_size, sampler=self.sampler,
                                 num_workers=settings.num_workers, collate_fn=settings.collate_fn,
                                 pin_memory=settings.pin_memory and device.type == "cuda", drop_last=self.drop_last,
                                 persistent_workers=settings.persistent_workers and settings.num_workers > 0)

    def __len__(self) -> int:
        count = self.stream.epoch_samples(self.num_replicas)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def start_epoch(self, epoch: int, skip_batches: int) -> None:
        """As `ResumableLoader.start_epoch`."""
        self.epoch, self.skip = epoch, skip_batches * self.batch_size

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)


class StreamKeys(Sampler[Any]):
    """The keys of a `StreamLoader`'s current pass (read when each pass starts); `num_samples` per rank
    as a DistributedSampler has."""

    def __init__(self, owner: StreamLoader) -> None:
        self.owner = owner

    @property
    def num_samples(self) -> int:
        return self.owner.stream.epoch_samples(self.owner.num_replicas)

    def __iter__(self) -> Iterator[Any]:
        owner = self.owner
        return owner.stream.keys(owner.epoch, owner.skip, owner.seed, owner.num_replicas, owner.rank)


def _resumable(sampler: Any) -> ResumableSampler:
    if not isinstance(sampler, ResumableSampler):
        raise TypeError("only a training loader (see `train_loader`) can start an epoch part-way")
    return sampler


Loader = DataLoader | DeviceTensorLoader | StreamLoader
TrainLoader = ResumableLoader | DeviceTensorLoader | StreamLoader


def split_loaders(splits: DataSplits, seed: int, device: torch.device, overfit_batches: int = 0,
                  num_replicas: int = 1, rank: int = 0) -> tuple[TrainLoader, Loader, Loader]:
    """The train, val and test loaders of `splits`, each rank on its shard.

    `overfit_batches`: train and validate on the same first batches of the validation split
    (which carries no augmentation): unshuffled, and validated at the training batch size.
    """
    shard = {"num_replicas": num_replicas, "rank": rank}
    train = train_loader(splits.val if overfit_batches else splits.train, splits.loader, seed, device,
                         shuffle=not overfit_batches, **shard)
    val_settings = replace(splits.loader, eval_batch_size=None) if overfit_batches else splits.loader
    return (train, eval_loader(splits.val, val_settings, device, **shard),
            eval_loader(splits.test, splits.loader, device, **shard))


def train_loader(dataset: Dataset, settings: LoaderSettings, seed: int, device: torch.device,
                 num_replicas: int = 1, rank: int = 0, shuffle: bool = True) -> TrainLoader:
    if isinstance(dataset, EpochStream):
        return StreamLoader(dataset, settings, seed, device, num_replicas, rank)
    in_workers = settings.num_workers > 0 and not _on_device(dataset, settings, device)
    sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank,
                               drop_last=settings.drop_last, seeded=in_workers)
    samples = SeededSamples(dataset) if in_workers and not isinstance(dataset, InMemory) else dataset
    loader = _loader(samples, settings, settings.batch_size, sampler, device, ResumableLoader)
    assert isinstance(loader, (ResumableLoader, DeviceTensorLoader))
    return loader


def eval_loader(dataset: Dataset, settings: LoaderSettings, device: torch.device,
                num_replicas: int = 1, rank: int = 0) -> Loader:
    sampler = EvalShardSampler(dataset, num_replicas=num_replicas, rank=rank)
    return _loader(dataset, settings, settings.eval_batch_size or settings.batch_size, sampler, device)


def _loader(dataset: Dataset, settings: LoaderSettings, batch_size: int, sampler: Sampler[Any],
            device: torch.device, kind: type[DataLoader] = DataLoader) -> Loader:
    drop_last = settings.drop_last and isinstance(sampler, ResumableSampler)
    if _on_device(dataset, settings, device):
        return DeviceTensorLoader(dataset, batch_size, sampler, device, drop_last)
    workers = settings.num_workers
    common: dict[str, Any] = {
        "batch_size": batch_size, "sampler": sampler, "num_workers": workers, "drop_last": drop_last,
        "persistent_workers": settings.persistent_workers and workers > 0,
        # Each new iterator draws its workers' base seed from this generator; without one it would
        # draw from the global RNG, and a resumed run would see other dropout masks. Nothing
        # depends on the seeds it gives (see `SeededSamples`).
        "generator": torch.Generator().manual_seed(0)}
    if isinstance(dataset, InMemory):  # one that asks for workers: they gather and augment whole batches
        return WorkerBatchLoader(dataset, **common)
    return kind(dataset, collate_fn=settings.collate_fn, pin_memory=settings.pin_memory and device.type == "cuda",
                **common)


def _on_device(dataset: Dataset, settings: LoaderSettings, device: torch.device) -> TypeGuard[InMemory]:
    """Whether `DeviceTensorLoader` batches `dataset`: an `InMemory` one, unless it asks for workers on the CPU."""
    return isinstance(dataset, InMemory) and not (
        dataset.batch_in_workers and device.type == "cpu" and settings.num_workers > 0)


def num_batches(loader: Loader, limit: int | float | None) -> int:
    """Batches per pass after `limit` (int = count, float = fraction of the full pass)."""
    full = len(loader)
    if limit is None:
        return full
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ValueError(f"batch limit must be a non-negative int or float, got {limit!r}")
    if isinstance(limit, float):
        return min(full, max(1, math.floor(full * limit))) if limit > 0 else 0
    return min(full, limit)
