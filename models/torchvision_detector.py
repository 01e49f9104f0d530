"""torchvision's object detectors by name: Faster R-CNN, RetinaNet, FCOS, SSD and SSDlite.

They own their losses: in training mode `model(images, targets)` returns a dict of named losses,
in eval mode `model(images)` returns one {"boxes", "labels", "scores"} dict per image. They take
lists of images of any size and resize them themselves (to `min_size`/`max_size` for the
R-CNN, RetinaNet and FCOS families; SSD models use their fixed size). Weights start random
(nothing is downloaded) unless `weights` names a local file: a state_dict such as torchvision's
COCO weights, whose class-dependent layers are left fresh when the number of classes differs.
Any other keyword goes to torchvision's builder, e.g. `+model.box_batch_size_per_image=64` (the
regions Faster R-CNN's box head trains on per image: its cost on a CPU) or `+model.score_thresh=0.3`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from decltrain.models.weights_file import is_weights_file, load_weights_file
from decltrain.trainer.errors import UserError

# The layers whose shape depends on the number of classes, per family (torchvision's attribute names).
CLASS_HEADS = ("roi_heads.box_predictor", "head.classification_head")
# Detectors that need more than boxes to train (masks, keypoints): not offered here.
NOT_BOX_DETECTORS = ("maskrcnn", "keypointrcnn")

Target = dict[str, torch.Tensor]


class TorchvisionDetector(nn.Module):
    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, ...], weights: str | None = None,
                 min_size: int | None = None, max_size: int | None = None, **builder_options: Any) -> None:
        super().__init__()
        detectors = [model for model in torchvision.models.list_models(module=torchvision.models.detection)
                     if not model.startswith(NOT_BOX_DETECTORS)]
        if name not in detectors:
            raise UserError(f"model.name={name!r} is not a torchvision box detector; pick one of {', '.join(detectors)}")
        sizes = {key: value for key, value in (("min_size", min_size), ("max_size", max_size)) if value is not None}
        if sizes and name.startswith("ssd"):
            raise UserError(f"model.min_size/max_size do not apply to {name}, which resizes every image to its "
                            "fixed size; set them to null")
        if weights is not None and not is_weights_file(weights):
            raise UserError(f"model.weights={weights!r} is not a weights file; download the weights elsewhere "
                            f"(e.g. torchvision's COCO weights of {name}) and set model.weights=/path/to/file.pth")
        # weights_backbone=None: the R-CNN builders would otherwise download ImageNet weights.
        self.net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes,
                                                **sizes, **builder_options)
        if weights is not None:
            load_weights_file(self.net, Path(weights), heads=CLASS_HEADS)

    def forward(self, images: list[torch.Tensor],
                targets: list[Target] | None = None) -> dict[str, torch.Tensor] | list[Target]:
        """Training mode, with `targets`: the named losses; eval mode: the detections of each image."""
        return self.net(images, targets)
