"""Object detection: boxes and their classes, learned by a model that computes its own losses.

A batch is (list of images, list of targets {"boxes": (N, 4) x1 y1 x2 y2, "labels": (N,)}), as
datasets/coco_detection.py gives it. The model is a detector in torchvision's convention
(models/torchvision_detector.py): in training mode `model(images, targets)` returns its named
losses, which are summed and each logged as `train/loss_<name>` (torchvision's `loss_` prefix
dropped); in eval mode `model(images)` returns one {"boxes", "labels", "scores"} dict per image.
Evaluation reports COCO's mean average precision by torchmetrics' `MeanAveragePrecision`:
`map` (IoU 0.5 to 0.95), `map_50` and `map_75`. Its COCO backend is the `detection` extra.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from decltrain.trainer.errors import UserError

Detections = list[dict[str, torch.Tensor]]
REPORTED = ("map", "map_50", "map_75")  # of MeanAveragePrecision's results
DETECTION_KEYS = {"boxes", "labels", "scores"}


class Detection:
    def __init__(self, class_names: Sequence[str] = (), kind: str = "detection") -> None:
        if kind != "detection":
            raise UserError(f"task=detection needs boxes but the dataset gives {kind} targets; use a detection "
                            "dataset (dataset=coco_detection), or the task of your targets")
        self.class_names = list(class_names)
        self.metrics("val")  # fails at start, not at the first validation, when the backend is missing

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        losses = model(images, targets)
        return {name.removeprefix("loss_"): value for name, value in losses.items()}

    def metrics(self, split: str) -> MetricCollection:
        """One `MeanAveragePrecision` (its results: map, map_50, map_75, ...; `summarize` keeps three)."""
        try:
            from torchmetrics.detection import MeanAveragePrecision
            average_precision = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        except ModuleNotFoundError as err:
            raise UserError(f"task=detection needs a COCO evaluation backend ({err}): "
                            "pip install -e \".[detection]\" (pycocotools)") from None
        return MetricCollection({"map": average_precision}, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        images, targets = batch
        detections = [{key: value.float() if value.is_floating_point() else value for key, value in found.items()}
                      for found in model(images)]  # float32 boxes and scores under bf16 autocast too
        metrics["map"].update(detections, [{"boxes": target["boxes"].as_subclass(torch.Tensor),
                                            "labels": target["labels"]} for target in targets])

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return {name: float(computed[name]) for name in REPORTED}, {}

    def model_inputs(self, batch: Any) -> Any:
        return batch[0]

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """Per image: its boxes (x1, y1, x2, y2 in the pixels of the image as the model got it), the
        class name of each and its score, most confident first."""
        rows = []
        for found in model(inputs):
            names = [self._name(label) for label in found["labels"].tolist()]
            rows.append({"boxes": [[round(value, 2) for value in box] for box in found["boxes"].float().tolist()],
                         "labels": names, "scores": [round(score, 6) for score in found["scores"].float().tolist()]})
        return rows

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        outputs = model(self.model_inputs(batch))
        if not isinstance(outputs, list) or not all(isinstance(found, dict) and DETECTION_KEYS <= found.keys()
                                                    for found in outputs):
            return (f"outputs a {type(outputs).__name__}, needs one dict of boxes, labels and scores per image "
                    "(a detector: model=torchvision_detector)")
        return None

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)
