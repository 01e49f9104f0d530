"""Dataset builders on small files the tests write (PNG folders, CSVs, text), and their fake twins."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from decltrain.datasets import csv_table, image_folder, text_csv, torchvision_images
from decltrain.datasets.base import loader_settings
from decltrain.trainer.errors import UserError

MNIST_NORM = {"mean": [0.1307], "std": [0.3081]}
IMAGENET_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize(("name", "shape", "classes"), [
    ("MNIST", (1, 28, 28), 10), ("FashionMNIST", (1, 28, 28), 10), ("CIFAR10", (3, 32, 32), 10)])
def test_fake_torchvision_datasets_need_no_files(tmp_path, name, shape, classes):
    splits = torchvision_images.build(name, str(tmp_path / "nothing"), [0.5] * shape[0], [0.5] * shape[0],
                                      download=False, fake=True)
    image, label = splits.train[0]
    assert (image.shape, image.dtype) == (shape, torch.float32) and 0 <= int(label) < classes
    assert (splits.input_shape, splits.num_classes, len(splits.class_names)) == (shape, classes, classes)
    assert not (tmp_path / "nothing").exists()


def test_mnist_augments_training_only(data_dir):
    flip_all = [v2.RandomHorizontalFlip(p=1.0)]
    splits = torchvision_images.build("MNIST", str(data_dir), download=False, train_transforms=flip_all,
                                      in_memory=False, **MNIST_NORM)  # the fast path: tests/test_fast_path.py
    assert len(splits.train) + len(splits.val) == 4000 and len(splits.test) == 1000
    raw_train = splits.train.base
    index = splits.val.indices[0]
    torch.testing.assert_close(splits.val[0][0], splits.eval_transform(raw_train[index][0]))  # val: not flipped
    index = splits.train.indices[0]
    torch.testing.assert_close(splits.train[0][0], splits.eval_transform(raw_train[index][0]).flip(-1))
    assert splits.class_names[0] == "0 - zero" and splits.input_shape == (1, 28, 28)


def write_image_folder(root: Path, split: str, classes: dict[str, int], size: int = 20) -> None:
    for number, (name, count) in enumerate(classes.items()):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("L", (size, size), color=40 * number + i).save(folder / f"{i}.png")


def test_image_folder_reads_classes_and_carves_validation(tmp_path):
    write_image_folder(tmp_path, "train", {"cat": 6, "dog": 4})
    resize = [v2.Resize(16, antialias=True), v2.CenterCrop(16)]
    splits = image_folder.build(str(tmp_path), eval_transforms=resize, train_transforms=resize,
                                val_fraction=0.2, **IMAGENET_NORM)
    assert splits.class_names == ["cat", "dog"] and splits.num_classes == 2
    assert (len(splits.train), len(splits.val)) == (8, 2)
    assert splits.test is splits.val  # no test/ folder: the validation set is tested
    image, _ = splits.val[0]
    assert image.shape == (3, 16, 16) == splits.input_shape  # grayscale PNGs are read as RGB
    assert splits.eval_transform(Image.new("RGB", (30, 30))).shape == (3, 16, 16)


def test_image_folder_uses_val_and_test_folders(tmp_path):
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        write_image_folder(tmp_path, split, {"a": count, "b": count})
    splits = image_folder.build(str(tmp_path), **IMAGENET_NORM)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 4, 2)
    assert [label for _, label in splits.test] == [0, 1]


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match=r"train does not exist; lay out your images as root/train/<class name>"):
        image_folder.build(str(tmp_path / "missing"), **IMAGENET_NORM)
    write_image_folder(tmp_path, "train", {"a": 2, "b": 2})
    write_image_folder(tmp_path, "val", {"a": 2, "c": 2})
    with pytest.raises(UserError, match=r"has classes \['a', 'c'\] but train/ has \['a', 'b'\]"):
        image_folder.build(str(tmp_path), **IMAGENET_NORM)


def test_fake_image_folder_needs_no_folder(tmp_path):
    splits = image_folder.build(str(tmp_path / "missing"), image_size=24, fake=True, fake_num_classes=3,
                                eval_transforms=[v2.CenterCrop(24)], **IMAGENET_NORM)
    assert (splits.input_shape, splits.num_classes) == ((3, 24, 24), 3)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def test_csv_regression_standardizes_with_training_rows(tmp_path):
    rows = [[i, 10 * i + 5, 2.5 * i] for i in range(40)]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "y"], rows)
    splits = csv_table.build(str(path), target="y", task="regression", val_fraction=0.25, test_fraction=0.25,
                             in_memory=False)  # Subset: `indices` names the rows
    assert (splits.task, splits.num_classes, splits.input_shape) == ("regression", 1, (2,))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 10)
    train_x = torch.stack([x for x, _ in splits.train])
    torch.testing.assert_close(train_x.mean(dim=0), torch.zeros(2), atol=1e-5, rtol=0)
    x, y = splits.test[0]
    row = rows[splits.test.indices[0]]
    assert y.dtype == torch.float32 and float(y) == row[2]
    torch.testing.assert_close(splits.eval_transform({"a": row[0], "b": row[1]}), x)
    torch.testing.assert_close(splits.eval_transform([row[0], row[1]]), x)


def test_csv_classification_maps_labels_to_sorted_classes(tmp_path):
    path = write_csv(tmp_path / "c.csv", ["x", "noise", "kind"],
                     [[i, 0, ["setosa", "virginica", "versicolor"][i % 3]] for i in range(30)])
    splits = csv_table.build(str(path), target="kind", features=["x"], task="multiclass")
    assert splits.class_names == ["setosa", "versicolor", "virginica"] and splits.num_classes == 3
    assert splits.input_shape == (1,)
    labels = {int(y) for _, y in splits.train}
    assert labels <= {0, 1, 2}
    with pytest.raises(UserError, match="binary needs 2 distinct target values, found 3"):
        csv_table.build(str(path), target="kind", task="binary")


def test_csv_bad_files_fail_naming_column_and_line(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["a", "y"], [[1, 2], ["oops", 3]])
    with pytest.raises(UserError, match=r"line 3: column 'a' holds 'oops', not a number"):
        csv_table.build(str(path), target="y")
    with pytest.raises(UserError, match=r"has no column 'target' \(its columns: a, y\)"):
        csv_table.build(str(path), target="target")
    with pytest.raises(UserError, match="does not exist; set dataset.path"):
        csv_table.build(str(tmp_path / "none.csv"), target="y")


@pytest.mark.parametrize(("task", "classes"), [("regression", 1), ("binary", 1), ("multiclass", 4)])
def test_fake_csv_keeps_width_and_classes(tmp_path, task, classes):
    splits = csv_table.build(str(tmp_path / "none.csv"), target="y", features=["a", "b", "c"], task=task,
                             fake=True, fake_num_classes=4)
    x, y = splits.train[0]
    assert (x.shape, splits.num_classes, splits.task) == ((3,), classes, task)
    assert y.dtype == (torch.float32 if task == "regression" else torch.int64)


def test_text_csv_tokenizes_builds_vocabulary_and_pads(tmp_path):
    texts = [["Great movie, loved it!", "pos"], ["Terrible. Hated it", "neg"]] * 10
    path = write_csv(tmp_path / "reviews.csv", ["text", "label"], texts)
    splits = text_csv.build(str(path), max_length=4, val_fraction=0.2, test_fraction=0.2)
    assert splits.class_names == ["neg", "pos"] and splits.input_shape == (4,)
    assert splits.vocab_size == 2 + len({"great", "movie", ",", "loved", "it", "!", "terrible", ".", "hated"})
    encoded = splits.eval_transform("great zebra")
    assert encoded[1] == text_csv.UNK and encoded[0] >= 2
    assert splits.eval_transform("").tolist() == [text_csv.UNK]
    assert len(splits.eval_transform("a b c d e f")) == 4  # truncated to max_length
    inputs, labels = splits.loader.collate_fn([(torch.tensor([4, 5, 6]), 1), (torch.tensor([7]), 0)])
    assert inputs.tolist() == [[4, 5, 6], [7, 0, 0]] and labels.tolist() == [1, 0]


def test_text_vocabulary_comes_from_training_rows_only():
    vocabulary = text_csv.build_vocabulary(["a a b", "b c"], min_freq=2, max_size=10)
    assert vocabulary == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3}


def test_fake_text_needs_no_file(tmp_path):
    splits = text_csv.build(str(tmp_path / "none.csv"), max_length=12, fake=True, fake_vocab_size=50,
                            fake_num_classes=3)
    inputs, labels = splits.loader.collate_fn([splits.train[i] for i in range(8)])
    assert inputs.dtype == torch.long and inputs.shape[1] <= 12 and int(inputs.max()) < 50
    assert (splits.vocab_size, splits.num_classes) == (50, 3)


def test_loader_settings_resolve_a_collate_path():
    settings = loader_settings(batch_size=8, collate_fn="decltrain.datasets.text_csv.pad_collate", drop_last=True,
                               pin_memory=False, persistent_workers=False, num_workers=1)
    assert settings.collate_fn is text_csv.pad_collate
    assert (settings.batch_size, settings.drop_last, settings.num_workers) == (8, True, 1)
    with pytest.raises(UserError, match="dataset.collate_fn='nowhere.fn' is not an importable function"):
        loader_settings(collate_fn="nowhere.fn")
