"""torchvision's segmentation models by name (fcn_*, deeplabv3_*, lraspp_*), returning their `out` scores.

They are built with `num_classes` outputs and without their auxiliary head. Pretrained weights
come from a local file (a state_dict, e.g. torchvision's COCO-VOC weights saved with
`torch.save`, or one of this project's checkpoints): a classifier of another number of classes
is left fresh. The backbone's ImageNet weights are never downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from decltrain.models.weights_file import load_weights_file
from decltrain.trainer.errors import UserError

# The parts holding the class scores: fcn and deeplabv3 end `classifier` in a 1x1 convolution,
# lraspp has two (`low_classifier`, `high_classifier`) under it.
HEADS = ("classifier",)
AUXILIARY = ("aux_classifier",)


class TorchvisionSegmenter(nn.Module):
    """Outputs (N, num_classes, H, W) scores: the `out` entry of torchvision's output dict."""

    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, ...], weights: str | None = None) -> None:
        super().__init__()
        available = torchvision.models.list_models(module=torchvision.models.segmentation)
        if name not in available:
            raise UserError(f"model.name={name!r} is not a torchvision segmentation model; pick one of "
                            f"{', '.join(sorted(available))}")
        if input_shape[0] != 3:
            raise UserError(f"model {name} takes RGB images (3 channels), the dataset gives {input_shape[0]}")
        self.net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes,
                                                aux_loss=False)
        if weights is not None:
            load_weights_file(self.net, Path(weights), heads=HEADS, ignored=AUXILIARY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)["out"]
        return out
