"""`predict` on a run trained in the test session, and the input handling of trainer/commands/predict.py."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from decltrain.datasets.base import DataSplits
from tests.helpers.commands import run_command
from decltrain.trainer.commands import predict
from decltrain.trainer.errors import UserError
from decltrain.trainer.commands import build
from decltrain.trainer.runs.run_folder import RunFolder
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.tasks.regression import Regression

DIGITS = 5


@pytest.fixture
def digit_files(tmp_path, data_dir) -> Path:
    """Test digits as PNG files, one of them RGB at twice the size, and one file that is no image."""
    folder = tmp_path / "digits"
    folder.mkdir()
    test_set = torchvision.datasets.MNIST(str(data_dir), train=False)
    for index in range(DIGITS):
        test_set[index][0].save(folder / f"digit{index}.png")
    # Nearest-neighbour doubling: shrinking it back gives the same grey values.
    test_set[0][0].resize((56, 56), 0).convert("RGB").save(folder / "rgb_big.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    return folder


def _eager_predictions(run: Path, data_dir: Path) -> list[int]:
    """What the run's model predicts for the first test digits, straight from the dataset."""
    splits, model, _, _ = build.trained_model(RunFolder.open(str(run), [f"dataset.root={data_dir}"]), "best")
    with torch.no_grad():
        inputs = torch.stack([splits.test[index][0] for index in range(DIGITS)])
        return model(inputs).argmax(dim=-1).tolist()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_predict_a_folder_names_each_file_and_skips_the_unreadable(tiny_run, digit_files, tmp_path, data_dir):
    result = run_command("predict", f"run={tiny_run}", f"inputs={digit_files}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {Path(row["input"]).name: row for row in _rows(tiny_run / "predictions.csv")}
    assert set(rows) == {f"digit{index}.png" for index in range(DIGITS)} | {"rgb_big.png"}
    expected = _eager_predictions(tiny_run, data_dir)
    assert [int(rows[f"digit{index}.png"]["class_index"]) for index in range(DIGITS)] == expected
    assert rows["rgb_big.png"]["class_index"] == rows["digit0.png"]["class_index"]
    for name, row in rows.items():
        assert 0.0 < float(row["probability"]) <= 1.0
        assert row["class_name"].startswith(row["class_index"])  # MNIST names: "7 - seven"
        line = next(line for line in result.stdout.splitlines() if name in line)
        assert f"{row['class_name']} (class {row['class_index']})" in line
    assert f"skipped {digit_files / 'broken.png'}: cannot identify image file" in result.stdout


@pytest.mark.slow
def test_predict_a_glob_into_a_chosen_file(tiny_run, digit_files, tmp_path, data_dir):
    output = tmp_path / "out" / "p.csv"
    result = run_command("predict", f"run={tiny_run}", f"inputs={digit_files}/digit*.png", f"output={output}",
                         cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [Path(row["input"]).name for row in _rows(output)] == [f"digit{index}.png" for index in range(DIGITS)]
    assert "skipped" not in result.stdout


@pytest.mark.slow
def test_predict_fails_when_nothing_is_readable(tiny_run, tmp_path, data_dir):
    (tmp_path / "junk.png").write_bytes(b"junk")
    result = run_command("predict", f"run={tiny_run}", f"inputs={tmp_path / 'junk.png'}", cwd=tmp_path,
                         data_dir=data_dir)
    assert result.returncode == 2
    assert "none of the inputs matched by inputs=" in result.stdout


def test_inputs_that_match_nothing_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no file, no folder with files and no glob"):
        predict.find_inputs(str(tmp_path / "*.png"))


def _table_splits(task: str, classes: int) -> DataSplits:
    """Splits of a table run: rows arrive as {column: text}, the transform picks the features."""
    empty = TensorDataset(torch.zeros(0, 2))
    return DataSplits(train=empty, val=empty, test=empty, num_classes=classes, input_shape=(2,), task=task,
                      class_names=["no", "yes"][:classes] if task != "regression" else [],
                      eval_transform=lambda row: torch.tensor([float(row["a"]), float(row["b"])]))


def test_text_lines_and_csv_rows_become_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("first line\n\nthird line\n")
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n3,oops\n")
    skipped = []
    items = list(predict.read_inputs([tmp_path / "notes.txt", tmp_path / "rows.csv"],
                                     lambda name, err: skipped.append(name)))
    assert items == [(f"{tmp_path / 'notes.txt'}:1", "first line"), (f"{tmp_path / 'notes.txt'}:3", "third line"),
                     (f"{tmp_path / 'rows.csv'}:2", {"a": "1", "b": "2"}),
                     (f"{tmp_path / 'rows.csv'}:3", {"a": "3", "b": "oops"})]
    splits = _table_splits("multiclass", 2)
    assert predict.prepare(items[2][1], splits).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):  # the row is skipped by name, the others still predicted
        predict.prepare(items[3][1], splits)
    assert skipped == []


def test_each_task_writes_its_rows():
    outputs = torch.tensor([[2.0], [-1.0]])
    binary = Classification(nn.BCEWithLogitsLoss(), "binary", 1, ["no", "yes"]).predict(nn.Identity(), outputs)
    assert [row["class_name"] for row in binary] == ["yes", "no"]
    assert binary[0]["probability"] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-6)
    assert binary[1]["probability"] == pytest.approx(1 - torch.sigmoid(torch.tensor(-1.0)).item(), abs=1e-6)
    assert Regression(nn.MSELoss()).predict(nn.Identity(), outputs) == [{"value": 2.0}, {"value": -1.0}]
    multiclass = Classification(nn.CrossEntropyLoss(), "multiclass", 2, ["no", "yes"]).predict(
        nn.Identity(), torch.tensor([[0.0, 3.0]]))
    assert multiclass == [{"class_index": 1, "class_name": "yes",
                           "probability": round(torch.tensor([0.0, 3.0]).softmax(0)[1].item(), 6)}]
    assert predict.describe({"input": "x.csv:2", **multiclass[0]}) == "x.csv:2  yes (class 1)  p=0.9526"
    labels = Classification(nn.BCEWithLogitsLoss(), "multilabel", 2, ["cat", "dog"]).predict(
        nn.Identity(), torch.tensor([[3.0, 1.0], [-2.0, 0.5]]))
    assert [row["labels"] for row in labels] == ["cat;dog", "dog"]
    assert labels[1]["p_cat"] == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-6)


def test_rows_with_lists_are_written_as_json_and_images_as_pngs(tmp_path):
    from PIL import Image

    rows = [{"input": "a/x.png", "boxes": [[0, 0, 2, 2]], "mask": Image.new("L", (4, 4))}]
    target = predict.write(rows, tmp_path / "predictions.csv")
    assert target == tmp_path / "predictions.json"
    (written,) = json.loads(target.read_text())
    assert written["boxes"] == [[0, 0, 2, 2]] and Image.open(written["mask"]).size == (4, 4)


@pytest.mark.slow
def test_predict_and_export_need_no_training_data(tiny_run, digit_files, tmp_path, data_dir):
    """A run folder predicts and exports from what it holds: no DATA_DIR, no dataset files."""
    assert (tiny_run / "inference.pt").is_file()
    nowhere = tmp_path / "no_data_here"
    result = run_command("predict", f"run={tiny_run}", f"inputs={digit_files}", "output=alone.csv", cwd=tmp_path,
                         data_dir=nowhere)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {Path(row["input"]).name: row for row in _rows(tmp_path / "alone.csv")}
    expected = _eager_predictions(tiny_run, data_dir)  # rebuilt from the dataset
    assert [int(rows[f"digit{index}.png"]["class_index"]) for index in range(DIGITS)] == expected
    assert rows["digit0.png"]["class_name"].startswith(rows["digit0.png"]["class_index"])
    exported = run_command("export-model", f"run={tiny_run}", "format=torchscript", cwd=tmp_path, data_dir=nowhere)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert not nowhere.exists()


def test_a_dataset_override_rebuilds_the_data():
    from decltrain.trainer.commands.inference_record import data_overridden

    assert data_overridden(["dataset.eval_batch_size=8"]) and data_overridden(["+dataset.extra=1"])
    assert not data_overridden(["trainer.accelerator=cpu", "model.dropout=0.1", "datasets_note=x"])


@pytest.mark.slow
def test_a_run_folder_without_the_inference_record_rebuilds_the_data(tiny_run, digit_files, tmp_path, data_dir):
    import shutil

    older = tmp_path / "older_run"
    shutil.copytree(tiny_run, older)
    (older / "inference.pt").unlink()
    result = run_command("predict", f"run={older}", f"inputs={digit_files}", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {Path(row["input"]).name: row for row in _rows(older / "predictions.csv")}
    assert [int(rows[f"digit{index}.png"]["class_index"]) for index in range(DIGITS)] == \
        _eager_predictions(tiny_run, data_dir)


@pytest.mark.slow
def test_a_text_run_predicts_from_its_folder_with_the_training_text_gone(tmp_path):
    """The vocabulary travels in the run folder: the same predictions with and without the CSV."""
    import random

    from tests.helpers.commands import run_train

    rng = random.Random(0)
    words = {"pos": ["great", "good", "lovely", "fine"], "neg": ["bad", "awful", "poor", "sad"]}
    table = tmp_path / "reviews.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(200):
            label = rng.choice(["pos", "neg"])
            writer.writerow([" ".join(rng.choices(words[label], k=3) + ["the", "movie"]), label])
    (tmp_path / "mine.txt").write_text("a great and lovely movie\nthe movie was awful and sad\n")
    run_dir = tmp_path / "run"
    trained = run_train("config=text_lstm", f"dataset.path={table}", "trainer.max_epochs=3",
                        f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr

    def predicted(output: str) -> list[str]:
        result = run_command("predict", f"run={run_dir}", f"inputs={tmp_path / 'mine.txt'}", f"output={output}",
                             cwd=tmp_path, data_dir=tmp_path / "nowhere")
        assert result.returncode == 0, result.stdout + result.stderr
        return [row["class_name"] for row in _rows(tmp_path / output)]

    with_data = predicted("with.csv")
    table.rename(tmp_path / "moved.csv")
    assert predicted("without.csv") == with_data == ["pos", "neg"]


def test_images_keep_their_own_size_for_models_that_take_any_size():
    """A detector's boxes must be in the pixels of the image given, not of a resized copy."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    splits = DataSplits(train=TensorDataset(torch.zeros(1)), val=TensorDataset(torch.zeros(1)),
                        test=TensorDataset(torch.zeros(1)), num_classes=3, input_shape=(3, 64, 64),
                        eval_transform=TF.to_image)
    image = Image.new("RGB", (128, 96))
    assert tuple(predict.prepare(image, splits).shape) == (3, 64, 64)  # a classifier takes its training size
    splits.any_image_size = True
    assert tuple(predict.prepare(image, splits).shape) == (3, 96, 128)
