"""torchvision's detectors by name: their losses, their detections, weights from a local file."""
from __future__ import annotations

import pytest
import torch

from decltrain.models import TorchvisionDetector
from decltrain.trainer.errors import UserError

SMALL = {"min_size": 64, "max_size": 64}


def test_a_detector_returns_named_losses_in_training_and_boxes_in_eval():
    torch.manual_seed(0)
    model = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3, input_shape=(3, 64, 64), **SMALL)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert isinstance(losses, dict) and set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                                                        "loss_rpn_box_reg"}
    with torch.no_grad():
        detections = model.eval()(images)
    assert isinstance(detections, list) and len(detections) == 2
    assert set(detections[0]) == {"boxes", "labels", "scores"} and detections[0]["boxes"].shape[-1] == 4


def test_weights_from_a_file_keep_all_but_the_class_layers_of_another_class_count(tmp_path):
    source = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", 5, (3, 64, 64), **SMALL)
    torch.save(source.net.state_dict(), tmp_path / "coco.pth")
    model = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_320_fpn", 3, (3, 64, 64),
                                weights=str(tmp_path / "coco.pth"), **SMALL)
    mine, theirs = model.net.state_dict(), source.net.state_dict()
    assert torch.equal(mine["backbone.body.0.0.weight"], theirs["backbone.body.0.0.weight"])
    assert mine["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3


@pytest.mark.parametrize(("settings", "message"), [
    ({"name": "maskrcnn_resnet50_fpn"}, r"model.name='maskrcnn_resnet50_fpn' is not a torchvision box detector; "
                                        r"pick one of .*fasterrcnn_mobilenet_v3_large_320_fpn"),
    ({"name": "ssdlite320_mobilenet_v3_large", "min_size": 64}, r"do not apply to ssdlite320_mobilenet_v3_large"),
    ({"name": "fcos_resnet50_fpn", "weights": "COCO_V1"}, r"model.weights='COCO_V1' is not a weights file"),
])
def test_wrong_detector_settings_are_named(settings, message):
    with pytest.raises(UserError, match=message):
        TorchvisionDetector(num_classes=3, input_shape=(3, 64, 64), **settings)
