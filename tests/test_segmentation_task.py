"""The segmentation task: exact IoU, pixel accuracy and Dice with an ignored value, overlays, a wrong model named, mask predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from decltrain.models import MnistCNN, UNet
from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.segmentation import Segmentation


class Fixed(nn.Module):
    """A "model" whose scores are one-hot of fixed predictions, whatever its input."""

    def __init__(self, predicted: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.scores = nn.functional.one_hot(predicted, classes).permute(0, 3, 1, 2).float() * 10

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores


def test_iou_pixel_accuracy_and_dice_leave_out_ignored_pixels():
    true = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    task = Segmentation(3, ["bg", "a", "b"])
    metrics = task.metrics("val")
    task.update(metrics, Fixed(predicted, 3).eval(), (torch.zeros(1, 3, 2, 4), true))
    scalars, images = task.summarize(metrics.compute())
    # Counted pixels: 6; right: 4. IoU: bg 1/3, a 2/3, b 1/2. Dice: bg 1/2, a 4/5, b 2/3.
    assert scalars["pixel_acc"] == pytest.approx(4 / 6)
    assert scalars["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scalars["dice"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert images["masks"].dtype == torch.uint8 and images["masks"].shape[0] == 3  # predicted row over true row


def test_a_classifier_for_the_segmentation_task_is_named_with_the_shapes():
    task = Segmentation(3)
    batch = (torch.zeros(2, 1, 28, 28), torch.zeros(2, 28, 28, dtype=torch.long))
    mismatch = task.output_mismatch(MnistCNN(3, (1, 28, 28)).eval(), batch)
    assert mismatch == ("outputs (2, 3), needs (2, 3, 28, 28): a score per class for every pixel (segmentation); "
                        "use a segmentation model (model=unet or model=torchvision_segmentation)")
    assert task.output_mismatch(UNet(3, (1, 28, 28), width=4, depth=2).eval(), batch) is None


def test_predict_gives_a_mask_image_of_class_indices_per_input():
    predicted = torch.tensor([[[0, 2], [2, 2]], [[1, 1], [0, 0]]])
    rows = Segmentation(3, ["bg", "a", "b"]).predict(Fixed(predicted, 3).eval(), torch.zeros(2, 3, 2, 2))
    assert [row["classes"] for row in rows] == ["bg;b", "bg;a"]
    assert isinstance(rows[0]["mask"], Image.Image) and np.array(rows[0]["mask"]).tolist() == [[0, 2], [2, 2]]


def test_a_dataset_of_class_labels_is_refused():
    with pytest.raises(UserError, match="task=segmentation needs masks but the dataset gives multiclass targets"):
        Segmentation(3, kind="multiclass")
