"""The task group: what is learned is the config's choice, and the engine only goes through it.

A model that computes its own loss (model_loss), named losses, your own task and its errors,
a model that does not fit its task, and a multi-label table trained end to end.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from decltrain.trainer.commands import build
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.classification import Classification
from decltrain.trainer.tasks.model_loss import ModelLoss
from tests.helpers.commands import run_train
from tests.helpers.data import mnist_pixels, synthetic_splits
from tests.helpers.trainers import RecordingLogger, TinyNet, make_trainer


class LossOwningNet(nn.Module):
    """Takes the whole (inputs, labels) batch and returns its loss in a dict, as `transformers` models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, labels = batch
        logits = self.net(inputs)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Accuracy(MeanMetric):
    """A metric fed as model_loss feeds its metrics: (the model's output, the batch)."""

    def update(self, outputs: Any, batch: Any) -> None:  # type: ignore[override]
        super().update((outputs["logits"].argmax(-1) == batch[1]).float())


def test_a_model_that_returns_its_loss_trains_and_is_scored_with_the_configured_metrics(tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, model=LossOwningNet(), task=ModelLoss({"acc": Accuracy()}),
                           loggers={"record": logger}, log_every_n_steps=1)
    trainer.fit()
    assert trainer.callback_metrics["val/acc"] > 0.9
    assert trainer.callback_metrics["val/loss"] < logger.logged["train/loss"][0]


class TwoLosses(Classification):
    """Cross-entropy plus a small penalty on the logits: a dict of named losses."""

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        outputs, targets = self.outputs(model, batch)
        return {"ce": self.loss_fn(outputs, targets), "size": 1e-3 * outputs.pow(2).mean()}


def test_named_losses_are_summed_and_each_logged(tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, task=TwoLosses(nn.CrossEntropyLoss(), "multiclass", 3),
                           loggers={"record": logger}, log_every_n_steps=1, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit()
    total, parts = logger.logged["train/loss"], zip(logger.logged["train/loss_ce"], logger.logged["train/loss_size"])
    assert total == pytest.approx([ce + size for ce, size in parts], rel=1e-5)


class NoUpdate:
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return model(batch[0]).sum()

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric()})


def test_your_own_task_without_a_method_fails_at_start_naming_it():
    cfg = OmegaConf.create({"task": {"_target_": "tests.test_tasks.NoUpdate"}})
    with pytest.raises(UserError, match=r"task tests\.test_tasks\.NoUpdate has no method update\(metrics, model, "
                                        r"batch\); every task needs loss, metrics, update"):
        build.task(cfg, synthetic_splits())


def test_your_own_task_is_given_the_dataset_metadata_its_constructor_takes():
    cfg = OmegaConf.create({"task": {"_target_": "decltrain.trainer.tasks.classification.Classification"},
                            "loss": {"_target_": "torch.nn.CrossEntropyLoss"}})
    task = build.task(cfg, synthetic_splits(classes=4))
    assert (task.kind, task.num_classes, task.class_names) == ("multiclass", 4, ["0", "1", "2", "3"])
    assert isinstance(build.task(OmegaConf.create({"task": {"_target_": "decltrain.trainer.tasks.model_loss.ModelLoss"}}),
                                 synthetic_splits()), ModelLoss)


def test_a_model_that_does_not_fit_its_task_fails_in_one_line_with_the_shapes():
    task = Classification(nn.CrossEntropyLoss(), "multiclass", 3)
    with pytest.raises(UserError) as raised:
        build.check_model_fits(TinyNet(num_classes=5), task, synthetic_splits())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("model TinyNet does not fit task Classification on dataset blobs (multiclass, input "
                              "shape (8,)): it outputs shape (2, 5), needs (batch, 3): one logit per class")


@pytest.mark.slow
def test_a_multilabel_table_writes_f1_and_map_per_label(tmp_path, data_dir):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(240, 4, generator=generator)
    labels = torch.stack([features[:, 0] > 0, features[:, 1] > 0, features[:, 0] + features[:, 2] > 0], dim=1)
    rows = "".join(",".join([*(f"{x:.3f}" for x in row), *(str(int(k)) for k in marks)]) + "\n"
                   for row, marks in zip(features.tolist(), labels.tolist()))
    (tmp_path / "tags.csv").write_text("a,b,c,d,cat,dog,eel\n" + rows)
    result = run_train("config=tabular_multilabel", "dataset.path=tags.csv", "dataset.target=[cat,dog,eel]",
                       "trainer.max_epochs=2", "logger=none", cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads(next(Path(tmp_path / "outputs" / "tabular_multilabel").glob("*/metrics.json")).read_text())
    test = metrics["test"]
    assert {f"test/{name}_{label}" for name in ("f1", "map") for label in ("cat", "dog", "eel")} <= set(test)
    assert test["test/map"] == pytest.approx(sum(test[f"test/map_{label}"] for label in ("cat", "dog", "eel")) / 3)
    assert test["test/map"] > 0.8 and metrics["monitor"] == "val/map"


@pytest.mark.parametrize("cache", [False, True])
def test_images_with_a_labels_csv_are_multilabel(tmp_path, cache):
    from PIL import Image

    from decltrain.datasets import image_folder

    lines = ["image,cat,dog"]
    for index in range(10):
        Image.new("RGB", (8, 8), (25 * index, 0, 0)).save(tmp_path / f"{index}.png")
        lines.append(f"{index}.png,{index % 2},{int(index > 4)}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = image_folder.build(str(tmp_path), mean=[0.5] * 3, std=[0.5] * 3, image_size=8, labels="labels.csv",
                                val_fraction=0.3, cache=cache, cache_dir=str(tmp_path / "cache"), batch_size=4)
    assert (splits.task, splits.num_classes, splits.class_names) == ("multilabel", 2, ["cat", "dog"])
    image, target = splits.val[0]
    assert image.shape[0] == 3 and target.dtype == torch.float32 and target.shape == (2,)
    (tmp_path / "labels.csv").write_text("image,cat\n0.png,yes\n")
    with pytest.raises(UserError, match="line 2: label column 'cat' holds 'yes'"):
        image_folder.build(str(tmp_path), mean=[0.5] * 3, std=[0.5] * 3, image_size=8, labels="labels.csv")


@pytest.mark.slow
def test_a_model_that_computes_its_own_loss_learns_to_reconstruct_digits(tmp_path, data_dir):
    """`config=mnist_autoencoder` (task=model_loss): the test reconstruction error beats the mean image's."""
    def normalized(train: bool) -> torch.Tensor:
        return (mnist_pixels(data_dir, train) - 0.1307) / 0.3081

    mean_image_error = float(((normalized(False) - normalized(True).mean(0)) ** 2).mean())
    result = run_train("config=mnist_autoencoder", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}",
                       cwd=tmp_path, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["monitor"] == "val/loss"
    assert report["test"]["test/loss"] < 0.6 * mean_image_error, (report["test"], mean_image_error)
