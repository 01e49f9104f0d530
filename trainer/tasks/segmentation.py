"""Segmentation: a class for every pixel, scored by mean IoU, pixel accuracy and Dice.

Batches are (images (N, C, H, W), masks (N, H, W) of class indices); the model outputs
(N, classes, H, W) scores. The loss is per-pixel cross-entropy; pixels of `ignore_index` count
in no loss or metric. The metrics are torchmetrics over confusion counts, so they are exact
over the whole split and over DDP ranks: `miou` (IoU per class, macro mean), `pixel_acc` and
`dice` (per class over all pixels, which is the per-class F1; macro mean). Every evaluation also
draws a few predicted masks over their images (`masks`, an image for the loggers). `predict`
writes each input's predicted mask as a PNG of class indices.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from decltrain.trainer.errors import UserError
from decltrain.trainer.tasks.mask_overlays import MaskOverlays
from decltrain.trainer.tasks.supervised import Supervised


class Segmentation(Supervised):
    def __init__(self, num_classes: int, class_names: Sequence[str] = (), kind: str = "segmentation",
                 ignore_index: int = 255, overlays: int = 4) -> None:
        if kind != "segmentation":
            raise UserError(f"task=segmentation needs masks but the dataset gives {kind} targets; use a "
                            "segmentation dataset (dataset=segmentation_folder) or another task")
        super().__init__(nn.CrossEntropyLoss(ignore_index=ignore_index))
        self.num_classes = num_classes
        self.class_names = list(class_names) or [str(index) for index in range(num_classes)]
        self.ignore_index = ignore_index
        self.overlays = overlays

    def metrics(self, split: str) -> MetricCollection:
        classes, ignore = self.num_classes, self.ignore_index
        return MetricCollection({
            "miou": MulticlassJaccardIndex(classes, average="macro", ignore_index=ignore, validate_args=False),
            "pixel_acc": MulticlassAccuracy(classes, average="micro", ignore_index=ignore, validate_args=False),
            "dice": MulticlassF1Score(classes, average="macro", ignore_index=ignore, validate_args=False),
            "loss": MeanMetric(),
            "masks": MaskOverlays(classes, self.overlays),
        }, compute_groups=False)

    def update(self, metrics: MetricCollection, model: nn.Module, batch: Any) -> None:
        outputs, masks = self.outputs(model, batch)
        predicted = outputs.argmax(dim=1)
        # The loss averaged per counted pixel over the split: each batch weighs by its counted pixels.
        metrics["loss"].update(self.loss_fn(outputs, masks), weight=(masks != self.ignore_index).sum())
        for name in ("miou", "pixel_acc", "dice"):
            metrics[name].update(predicted, masks)
        metrics["masks"].update(self.model_inputs(batch), predicted, masks)

    def summarize(self, computed: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        images = {name: value for name, value in computed.items() if value.dim() == 3}
        return {name: float(value) for name, value in computed.items() if value.dim() == 0}, images

    def output_mismatch(self, model: nn.Module, batch: Any) -> str | None:
        inputs, masks = batch
        outputs = model(inputs)
        expected = (len(masks), self.num_classes, *masks.shape[1:])
        if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != expected:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            return (f"outputs {shape}, needs {expected}: a score per class for every pixel (segmentation); "
                    "use a segmentation model (model=unet or model=torchvision_segmentation)")
        return None

    def predict(self, model: nn.Module, inputs: Any) -> list[dict[str, Any]]:
        """The predicted mask (a PNG of class indices, the size of the transformed input) and the classes in it."""
        predicted = model(inputs).argmax(dim=1).to(torch.uint8).cpu()
        return [{"mask": Image.fromarray(mask.numpy()),
                 "classes": ";".join(self.class_names[index] for index in mask.unique().tolist())}
                for mask in predicted]
