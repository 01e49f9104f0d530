"""`dataset=hf`: Hugging Face datasets written by the test itself (parquet), and the MNIST subset converted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from decltrain.datasets.hf import build
from decltrain.datasets.image_cache import CachedImages
from decltrain.trainer.errors import UserError
from tests.helpers.commands import run_train
from tests.helpers.hf import write_image_parquet

datasets = pytest.importorskip("datasets")  # Hugging Face's, installed with the `hf` extra

def build_images(path: Path, **settings) -> object:
    return build("parquet", data_files=str(path), columns={"image": "img", "label": "label"}, mean=[0.5] * 3,
                 std=[0.5] * 3, image_size=8, num_workers=0, **settings)


def test_a_parquet_of_images_gives_carved_splits_and_class_label_names(tmp_path):
    splits = build_images(write_image_parquet(tmp_path / "images.parquet"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (48, 6, 6)
    assert splits.class_names == ["cat", "dog", "eel"] and splits.num_classes == 3 and splits.task == "multiclass"
    image, label = splits.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label in (0, 1, 2)
    carved = {index for part in (splits.train, splits.val, splits.test) for index in part.indices}
    assert carved == set(range(60))  # a partition: no row in two splits


def test_cache_true_decodes_once_into_the_image_cache(tmp_path):
    parquet = write_image_parquet(tmp_path / "images.parquet")
    splits = build_images(parquet, cache=True, cache_dir=str(tmp_path / "cache"), cache_size=8)
    assert isinstance(splits.train, CachedImages) and len(splits.train) == 48
    arrays = list((tmp_path / "cache").glob("*.npy"))
    assert len(arrays) == 1
    build_images(parquet, cache=True, cache_dir=str(tmp_path / "cache"), cache_size=8)
    assert list((tmp_path / "cache").glob("*.npy")) == arrays  # reused, not rebuilt


def test_features_and_a_float_label_make_a_regression(tmp_path):
    rows = {"a": [float(i) for i in range(40)], "b": [2.0 * i for i in range(40)], "y": [0.5 * i for i in range(40)]}
    datasets.Dataset.from_dict(rows).to_csv(str(tmp_path / "table.csv"), index=False)
    splits = build("csv", data_files=str(tmp_path / "table.csv"), columns={"features": ["a", "b"], "label": "y"},
                   num_workers=0, val_fraction=0.25, test_fraction=0.25)
    features, target = splits.train[0]
    assert splits.task == "regression" and splits.input_shape == (2,)
    assert features[1].item() == 2 * features[0].item() and target == 0.5 * features[0].item()


def test_text_gets_the_built_in_tokenizer(tmp_path):
    lines = [{"text": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2} for i in range(30)]
    (tmp_path / "reviews.json").write_text("\n".join(json.dumps(line) for line in lines))
    splits = build("json", data_files=str(tmp_path / "reviews.json"), columns={"text": "text", "label": "label"},
                   num_workers=0, max_length=8)
    ids, label = splits.train[0]
    assert ids.dtype == torch.long and splits.vocab_size and splits.class_names == ["0", "1"]


def test_a_missing_dataset_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        build("parquet", data_files=str(tmp_path / "absent.parquet"), num_workers=0)
    assert "absent.parquet" in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_column_is_one_line_listing_the_columns(tmp_path):
    parquet = write_image_parquet(tmp_path / "images.parquet", count=10)
    with pytest.raises(UserError, match=r"no column 'pixels' \(its columns: img, label\)"):
        build("parquet", data_files=str(parquet), columns={"image": "pixels", "label": "label"}, num_workers=0)


def write_mnist_parquet(data_dir: Path, out: Path) -> dict[str, str]:
    """The MNIST subset as two parquet files (train, test) of PNG images and ClassLabel digits."""
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    files = {}
    for split, train in (("train", True), ("test", False)):
        mnist = torchvision.datasets.MNIST(str(data_dir), train=train, download=False)
        rows = {"image": [mnist[i][0] for i in range(len(mnist))], "label": mnist.targets.tolist()}
        files[split] = str(out / f"{split}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(files[split])
    return files


@pytest.mark.slow
def test_mnist_as_parquet_trains_to_the_accuracy_of_config_mnist_cnn(tmp_path, data_dir):
    files = write_mnist_parquet(data_dir, tmp_path)
    short = ("config=mnist_cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2")
    hf = ("dataset=hf", "dataset.path=parquet", f"dataset.data_files={{train: {files['train']}, test: {files['test']}}}",
          "dataset.mean=[0.1307]", "dataset.std=[0.3081]", "dataset.image_size=28", "dataset.num_workers=0")
    accuracy = {}
    for name, extra in (("mnist", ()), ("hf", hf)):
        result = run_train(*short, *extra, f"hydra.run.dir={tmp_path / name}", cwd=tmp_path,
                           env={"DATA_DIR": str(data_dir), "HF_DATASETS_OFFLINE": "1",
                                "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")})
        assert result.returncode == 0, result.stdout + result.stderr
        accuracy[name] = json.loads((tmp_path / name / "metrics.json").read_text())["test"]["test/acc"]
    assert accuracy["mnist"] > 0.5
    assert abs(accuracy["hf"] - accuracy["mnist"]) <= 0.005, accuracy

