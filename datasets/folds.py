"""Cross-validation: train on K-1 folds of the training data, validate on the remaining one.

`dataset.folds=K dataset.fold=i` pools a dataset's training and validation samples, deals them
into K folds (stratified by class for classification, shuffled with `seed`), trains on every fold
but i and validates on fold i; the test split is not touched. It works on the splits any
map-style dataset builder returns: each sample keeps the processing of its new role (training
augmentation for the training folds, the evaluation transform for the validation fold) where the
splits say how they process (`TransformedSubset`, `InMemory`); other splits are pooled as they are.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from decltrain.datasets.base import DataSplits, SizedDataset, TransformedSubset
from decltrain.datasets.in_memory import InMemory
from decltrain.trainer.errors import UserError

CLASSIFICATION = ("multiclass", "binary")


def cross_validation(splits: DataSplits, folds: int, fold: int, seed: int) -> DataSplits:
    """`splits` with train and val replaced by fold `fold` of `folds` of their pooled samples."""
    if folds < 2:
        raise UserError(f"dataset.folds={folds}: cross-validation needs 2 or more folds (or dataset.folds=null)")
    if not 0 <= fold < folds:
        raise UserError(f"dataset.fold={fold} is not one of the {folds} folds; use 0 to {folds - 1}, "
                        f"e.g. 'dataset.fold=range({folds})' in a sweep")
    train, val = splits.train, splits.val
    if isinstance(train, TransformedSubset) and isinstance(val, TransformedSubset):
        base, indices = _pooled_bases(train, val)
        labels = _labels(base, indices, splits.task)
        train_part, val_part = assign(labels, folds, fold, seed)
        new_train: Dataset = TransformedSubset(base, [indices[i] for i in train_part], train.transform)
        new_val: Dataset = TransformedSubset(base, [indices[i] for i in val_part], val.transform)
    elif isinstance(train, InMemory) and isinstance(val, InMemory):
        pool = InMemory(torch.cat([train.inputs, val.inputs.to(train.device)]),
                        torch.cat([train.targets, val.targets.to(train.device)]))
        labels = pool.targets.tolist() if splits.task in CLASSIFICATION else [None] * len(pool)
        train_part, val_part = assign(labels, folds, fold, seed)
        new_train, new_val = pool.subset(train_part, train.transform), pool.subset(val_part, val.transform)
    else:
        pooled: ConcatDataset[Any] = ConcatDataset([train, val])
        labels = _labels(pooled, range(len(pooled)), splits.task)
        train_part, val_part = assign(labels, folds, fold, seed)
        new_train, new_val = Subset(pooled, train_part), Subset(pooled, val_part)
    return dataclasses.replace(splits, train=new_train, val=new_val)


def assign(labels: Sequence[Any], folds: int, fold: int, seed: int) -> tuple[list[int], list[int]]:
    """(training positions, validation positions) of fold `fold`: each class (or, without labels, all
    positions) shuffled with `seed` and dealt to the folds in turn, so every fold holds each class's share."""
    if len(labels) < folds:
        raise UserError(f"dataset.folds={folds}: the training data has only {len(labels)} samples")
    by_class: dict[Any, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[label].append(position)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    dealt = 0  # continue dealing where the previous class stopped, so fold sizes differ by one at most
    for label in sorted(by_class, key=repr):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        chosen += [members[i] for n, i in enumerate(order) if (dealt + n) % folds == fold]
        dealt += len(members)
    in_fold = set(chosen)
    return [p for p in range(len(labels)) if p not in in_fold], sorted(chosen)


def _pooled_bases(train: TransformedSubset, val: TransformedSubset) -> tuple[SizedDataset, list[int]]:
    """One base holding both splits' samples, and the positions in it of the pooled samples."""
    if train.base is val.base:
        return train.base, [*train.indices, *val.indices]
    offset = len(train.base)
    base: SizedDataset = ConcatDataset([train.base, val.base])  # type: ignore[list-item]
    return base, [*train.indices, *(offset + i for i in val.indices)]


def _labels(base: Any, indices: Sequence[int], task: str) -> list[Any]:
    """Each pooled sample's class for stratification (None outside classification or for a label that
    is not one class, e.g. multi-label): from the dataset's `targets` when it has them, else by
    reading the samples."""
    if task not in CLASSIFICATION:
        return [None] * len(indices)
    targets = getattr(base, "targets", None)
    if targets is not None:
        return [_class(targets[i]) for i in indices]
    return [_class(base[i][1]) for i in indices]


def _class(target: Any) -> Any:
    if isinstance(target, torch.Tensor):
        return target.item() if target.numel() == 1 else None
    return target if isinstance(target, (int, str)) else None
