"""A CSV table: numeric feature columns and one target column, for classification or regression,
or several 0/1 target columns, one per label, for multi-label classification.

Train, validation and test rows are split off with a fixed seed. Features are standardized with
the training rows' mean and standard deviation (the same numbers apply to new rows in predict).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from decltrain.datasets.base import FAKE_SIZES, DataSplits, loader_settings, read_csv_rows, split_indices
from decltrain.datasets.in_memory import InMemory
from decltrain.trainer.errors import UserError

TABLE_TASKS = ("multiclass", "binary", "regression", "classification", "multilabel")


class RowEncoder:
    """One table row (a dict by column name, or a list in feature order) to a standardized float tensor."""

    def __init__(self, features: list[str], mean: torch.Tensor, std: torch.Tensor) -> None:
        self.features = features
        self.mean = mean
        self.std = std

    def __call__(self, row: Mapping[str, Any] | Sequence[Any]) -> torch.Tensor:
        values = [row[name] for name in self.features] if isinstance(row, Mapping) else list(row)
        if len(values) != len(self.features):
            raise UserError(f"a row needs {len(self.features)} feature values ({', '.join(self.features)}), "
                            f"got {len(values)}")
        return (torch.tensor([float(v) for v in values]) - self.mean) / self.std


def build(path: str, target: str | list[str], features: list[str] | None = None, task: str = "regression",
          val_fraction: float = 0.15, test_fraction: float = 0.15, val_split_seed: int = 0,
          standardize: bool = True, fake: bool = False, fake_num_features: int = 8, fake_num_classes: int = 3,
          in_memory: bool = True, **loader: Any) -> DataSplits:
    """Reads `path` (or with `fake` generates rows of the same width and classes).

    `features: null` takes every column but the target. For `multiclass` and `binary`, the
    target's distinct values (sorted) are the classes; `binary` needs exactly two;
    `classification` becomes `binary` (one logit) with two classes and `multiclass` otherwise.
    `multilabel` takes a list of target columns holding 0 or 1, one per label (the labels'
    names are the columns'), and gives (N, labels) float targets.
    `in_memory` batches the rows by index on the training device (the fast path); false feeds
    them through a DataLoader.
    """
    if task not in TABLE_TASKS:
        raise UserError(f"dataset.task={task!r} is unknown; use one of {', '.join(TABLE_TASKS)}")
    targets_named = [target] if isinstance(target, str) else list(target)
    if (task == "multilabel") != (len(targets_named) > 1 or not isinstance(target, str)):
        raise UserError(f"dataset.target={target}: several target columns go with dataset.task=multilabel "
                        "(one 0/1 column per label), one column with the other tasks")
    if fake:
        names = list(features) if features else [f"x{i}" for i in range(fake_num_features)]
        inputs, targets, class_names = _fake_table(len(names), task, fake_num_classes)
    else:
        names, inputs, targets, class_names = _read_table(path, targets_named, features, task)
    if task == "classification":
        if len(class_names) < 2:
            raise UserError(f"{path}: target column {target!r} holds one value; classification needs two or more")
        task = "binary" if len(class_names) == 2 else "multiclass"
    train_indices, val_indices, test_indices = split_indices(len(inputs), [val_fraction, test_fraction],
                                                             val_split_seed)
    mean, std = torch.zeros(len(names)), torch.ones(len(names))
    if standardize:
        train_inputs = inputs[train_indices]
        mean, std = train_inputs.mean(dim=0), train_inputs.std(dim=0, correction=0).clamp(min=1e-8)
    table = InMemory((inputs - mean) / std, targets)
    train, val, test = (table.subset(indices, None) if in_memory else Subset(table, indices)
                        for indices in (train_indices, val_indices, test_indices))
    return DataSplits(
        train=train, val=val, test=test,
        num_classes=len(class_names) if task in ("multiclass", "multilabel") else 1, input_shape=(len(names),),
        loader=loader_settings(**loader), class_names=class_names, task=task,
        name=f"csv:{Path(path).name}", eval_transform=RowEncoder(names, mean, std),
    )


def _read_table(path: str, targets: list[str], features: list[str] | None,
                task: str) -> tuple[list[str], torch.Tensor, torch.Tensor, list[str]]:
    rows = read_csv_rows(path, [*targets, *(features or [])], "dataset")
    names = list(features) if features else [column for column in rows[0] if column not in targets]
    values = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            values.append([float(row[name]) for name in names])
        except (TypeError, ValueError):
            bad = next(name for name in names if not _is_number(row[name]))
            raise UserError(f"{path} line {line}: column {bad!r} holds {row[bad]!r}, not a number; "
                            "fix the value or leave the column out of dataset.features") from None
    if task == "multilabel":
        return names, torch.tensor(values), _label_columns(path, rows, targets), targets
    target = targets[0]
    labels = [row[target] for row in rows]
    if task == "regression":
        try:
            return names, torch.tensor(values), torch.tensor([float(v) for v in labels]), []
        except ValueError:
            raise UserError(f"{path}: target column {target!r} is not numeric; use dataset.task=multiclass "
                            "for a categorical target") from None
    class_names = sorted(set(labels))
    if task == "binary" and len(class_names) != 2:
        raise UserError(f"{path}: dataset.task=binary needs 2 distinct target values, found {len(class_names)}")
    index = {name: i for i, name in enumerate(class_names)}
    return names, torch.tensor(values), torch.tensor([index[v] for v in labels]), class_names


def _label_columns(path: str, rows: list[dict[str, str]], targets: list[str]) -> torch.Tensor:
    """(rows, labels) floats from 0/1 columns; any other value is named with its line."""
    for line, row in enumerate(rows, start=2):
        bad = next((name for name in targets if row[name].strip() not in ("0", "1")), None)
        if bad is not None:
            raise UserError(f"{path} line {line}: label column {bad!r} holds {row[bad]!r}; multilabel target "
                            "columns hold 0 or 1")
    return torch.tensor([[float(row[name]) for name in targets] for row in rows])


def _is_number(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _fake_table(num_features: int, task: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Random rows whose target depends on the features, so a model can learn something."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(sum(FAKE_SIZES), num_features, generator=generator)
    score = inputs @ torch.randn(num_features, generator=generator)
    if task == "regression":
        return inputs, score, []
    if task == "multilabel":  # one label per random direction of the features
        scores = inputs @ torch.randn(num_features, num_classes, generator=generator)
        return inputs, (scores > 0).float(), [f"label_{i}" for i in range(num_classes)]
    classes = 2 if task == "binary" else num_classes
    edges = score.quantile(torch.linspace(0, 1, classes + 1)[1:-1])
    return inputs, torch.bucketize(score, edges), [f"class_{i}" for i in range(classes)]
