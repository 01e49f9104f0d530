"""Cross-validation folds (`dataset.folds=K dataset.fold=i`): stratified, seeded, test untouched, any dataset."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits, TransformedSubset
from decltrain.datasets.folds import assign, cross_validation
from decltrain.datasets.in_memory import InMemory
from decltrain.trainer.errors import UserError
from tests.helpers.commands import run_train

LABELS = [0] * 30 + [1] * 20 + [2] * 10  # 60 samples, unbalanced


def test_the_folds_partition_the_samples_with_each_class_s_share():
    validation = [assign(LABELS, 5, fold, seed=0)[1] for fold in range(5)]
    assert sorted(p for fold in validation for p in fold) == list(range(60))  # each sample validated once
    for fold in validation:
        assert Counter(LABELS[p] for p in fold) == {0: 6, 1: 4, 2: 2}  # stratified
    train, val = assign(LABELS, 5, 2, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 60
    assert assign(LABELS, 5, 2, seed=0) == (train, val)  # seeded
    assert assign(LABELS, 5, 2, seed=1) != (train, val)


def test_regression_folds_are_shuffled_evenly():
    sizes = [len(assign([None] * 23, 5, fold, seed=0)[1]) for fold in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]


def splits_of(train, val, task="multiclass") -> DataSplits:
    test = TensorDataset(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    return DataSplits(train=train, val=val, test=test, num_classes=3, input_shape=(1,), task=task)


def test_transformed_subsets_keep_each_role_s_transform_and_the_test_split():
    base = TensorDataset(torch.arange(60.0).unsqueeze(1), torch.tensor(LABELS))
    base.targets = LABELS  # type: ignore[attr-defined]  # torchvision datasets have them: read without loading
    augment, evaluate = (lambda x: x + 1000), (lambda x: x)  # noqa: E731
    splits = splits_of(TransformedSubset(base, range(54), augment), TransformedSubset(base, range(54, 60), evaluate))
    folded = cross_validation(splits, 3, 1, seed=0)
    assert folded.test is splits.test
    assert (len(folded.train), len(folded.val)) == (40, 20)
    assert all(folded.train[i][0].item() >= 1000 for i in range(len(folded.train)))  # augmented
    val_inputs = {int(folded.val[i][0].item()) for i in range(len(folded.val))}
    assert max(val_inputs) < 1000 and Counter(LABELS[i] for i in val_inputs) == {0: 10, 1: 7, 2: 3}


def test_in_memory_splits_stay_in_memory_with_their_transforms():
    inputs, targets = torch.arange(60.0).unsqueeze(1), torch.tensor(LABELS)
    splits = splits_of(InMemory(inputs[:50], targets[:50], lambda x: x * -1), InMemory(inputs[50:], targets[50:]))
    folded = cross_validation(splits, 4, 0, seed=0)
    assert isinstance(folded.train, InMemory) and isinstance(folded.val, InMemory)
    assert len(folded.train) + len(folded.val) == 60 and folded.val.transform is None
    assert torch.all(folded.train.batch(torch.arange(len(folded.train)))[0] <= 0)


def test_any_other_map_style_dataset_is_pooled_as_it_is():
    train = TensorDataset(torch.zeros(40, 2), torch.linspace(0, 1, 40))
    val = TensorDataset(torch.ones(10, 2), torch.linspace(0, 1, 10))
    folded = cross_validation(splits_of(train, val, task="regression"), 5, 4, seed=3)
    assert (len(folded.train), len(folded.val)) == (40, 10)


@pytest.mark.parametrize(("folds", "fold", "message"), [(1, 0, "needs 2 or more folds"),
                                                        (5, 5, r"is not one of the 5 folds; use 0 to 4")])
def test_a_fold_outside_the_folds_is_one_line(folds, fold, message):
    train = TensorDataset(torch.zeros(40, 2), torch.zeros(40, dtype=torch.long))
    with pytest.raises(UserError, match=message):
        cross_validation(splits_of(train, train), folds, fold, seed=0)


@pytest.mark.slow
def test_a_five_fold_sweep_prints_each_metric_s_mean_and_standard_deviation(tmp_path):
    result = run_train("-m", "config=mnist_mlp", "dataset.fake=true", "dataset.folds=5", "dataset.fold=range(5)",
                       "trainer.max_epochs=1", "logger=none", "hydra.sweep.dir=cv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    spread = json.loads((tmp_path / "cv" / "mean_std.json").read_text())
    accuracies = [json.loads((tmp_path / "cv" / f"{n}_mnist_mlp" / "metrics.json").read_text())["best"]["val/acc"]
                  for n in range(5)]
    assert spread["best val/acc"]["mean"] == pytest.approx(sum(accuracies) / 5)
    assert spread["best val/acc"]["jobs"] == 5
    line = f"best val/acc: mean {spread['best val/acc']['mean']:.4f}, std {spread['best val/acc']['std']:.4f} over 5 jobs"
    assert line in result.stdout
    assert "test/acc: mean" in (tmp_path / "cv" / "summary.txt").read_text()
