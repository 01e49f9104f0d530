"""The detection task with stand-in models: named losses, COCO mAP, predict rows, the model-fit check."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.detection import Detection

TARGETS = [{"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 5.0, 60.0, 40.0]]), "labels": torch.tensor([1, 2])},
           {"boxes": torch.tensor([[10.0, 10.0, 50.0, 30.0]]), "labels": torch.tensor([2])}]
IMAGES = [torch.zeros(3, 64, 64), torch.zeros(3, 48, 64)]


class Oracle(nn.Module):
    """Finds every true box with a score of 0.9, and one false box of class 1 with 0.5 (its losses: fixed)."""

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if self.training:
            return {"loss_classifier": torch.tensor(0.5), "loss_box_reg": torch.tensor(0.25)}
        return [{"boxes": torch.cat([target["boxes"], torch.tensor([[0.0, 40.0, 10.0, 47.0]])]),
                 "labels": torch.cat([target["labels"], torch.tensor([1])]),
                 "scores": torch.tensor([0.9] * len(target["labels"]) + [0.5])} for target in TARGETS]


def test_the_losses_are_the_models_own_without_torchvisions_prefix():
    assert Detection().loss(Oracle().train(), (IMAGES, TARGETS)) == {"classifier": torch.tensor(0.5),
                                                                    "box_reg": torch.tensor(0.25)}


def test_map_of_a_model_that_finds_every_box_before_any_false_one_is_one():
    task = Detection(["background", "cat", "dog"])
    metrics = task.metrics("val")
    assert list(metrics.keys()) == ["map"]  # val/map, known before training (map_50 and map_75 come with it)
    task.update(metrics, Oracle().eval(), (IMAGES, TARGETS))
    scalars, images = task.summarize(metrics.compute())
    assert scalars == {"map": 1.0, "map_50": 1.0, "map_75": 1.0} and images == {}


def test_predict_names_the_classes_of_each_box():
    rows = Detection(["background", "cat", "dog"]).predict(Oracle().eval(), IMAGES)
    assert rows[1] == {"boxes": [[10.0, 10.0, 50.0, 30.0], [0.0, 40.0, 10.0, 47.0]], "labels": ["dog", "cat"],
                       "scores": [0.9, 0.5]}


def test_a_model_that_returns_a_tensor_does_not_fit():
    mismatch = Detection().output_mismatch(nn.Flatten(), (torch.zeros(2, 3, 8, 8), TARGETS))
    assert mismatch == ("outputs a Tensor, needs one dict of boxes, labels and scores per image "
                        "(a detector: model=torchvision_detector)")


def test_a_dataset_without_boxes_is_refused():
    with pytest.raises(UserError, match="task=detection needs boxes but the dataset gives multiclass targets"):
        Detection(kind="multiclass")
