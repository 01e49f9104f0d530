"""Object detection data: images with boxes from COCO-format annotation files, or generated shapes.

Each split is one annotation file (relative to `root`), the format annotation tools export;
without a validation file a validation set is carved from the training images (fixed seed),
and without a test file the validation set is also tested. Labels are 1..K in the order of the
category ids, 0 being the background that torchvision's detectors reserve, so `num_classes`
is K + 1 and `class_names` starts with `background`. Samples are an image and a target
{"boxes": tv_tensors.BoundingBoxes (x1, y1, x2, y2), "labels": int64}; the transforms.v2 steps
see both, so a flip or crop moves the boxes with the image. Images keep their own sizes (the
detectors resize them), so a batch is a list of images and a list of targets (`collate_lists`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from decltrain.datasets.base import FAKE_SIZES, DataSplits, JointlyTransformedSubset, SizedDataset, loader_settings
from decltrain.datasets.coco_file import AnnotatedImage, read_coco
from decltrain.datasets.images import ImagePipeline, image_pipeline, split_parts
from decltrain.datasets.shapes import ShapeImages
from decltrain.trainer.errors import UserError

Target = dict[str, torch.Tensor]
UNNORMALIZED = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])  # mean, std: Normalize leaves the [0, 1] image as it is


def build(root: str, train: str = "train.json", val: str | None = None, test: str | None = None,
          images: str | None = None, train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, val_fraction: float = 0.2,
          val_split_seed: int = 0, fake: bool = False, fake_num_classes: int = 2, image_size: int = 128,
          **loader: Any) -> DataSplits:
    """The splits of COCO files `train`, `val`, `test` under `root` (file names relative to `images`,
    default each file's own folder), or with `fake` generated `image_size` images of `fake_num_classes`."""
    splits: list[SizedDataset | None]
    if fake:
        splits = [ShapeImages(count, image_size, fake_num_classes, seed) for seed, count in enumerate(FAKE_SIZES)]
        names = [f"class_{label}" for label in range(1, fake_num_classes + 1)]
    else:
        splits, names = _read_splits(Path(root), train, val, test, images)
    train_set, val_set, test_set = splits
    assert train_set is not None  # always read or generated
    train_part, val_part, test_part = split_parts(train_set, val_set, test_set, _joint_part,
                                                  _pipeline(train_transforms, sanitize=True),
                                                  _pipeline(eval_transforms, sanitize=True), val_fraction,
                                                  val_split_seed)
    image, _ = test_part[0]
    return DataSplits(train=train_part, val=val_part, test=test_part, num_classes=len(names) + 1,
                      input_shape=tuple(image.shape), loader=loader_settings(**loader, default_collate_fn=collate_lists),
                      class_names=["background", *names], task="detection",
                      name="shapes" if fake else f"coco:{Path(root).name}",
                      eval_transform=_pipeline(eval_transforms, sanitize=False).per_sample(), any_image_size=True)


def collate_lists(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Images of different sizes cannot be stacked: a batch is the list of images and the list of targets."""
    return [image for image, _ in batch], [target for _, target in batch]


class CocoImages:
    """The images of one COCO file with their boxes, labelled by `labels` (COCO category id -> label)."""

    def __init__(self, images: list[AnnotatedImage], labels: dict[int, int]) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, Target]:
        record = self.images[index]
        with Image.open(record.path) as file:
            image = v2.functional.to_image(file.convert("RGB"))
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        return image, {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image.shape[-2:]),
                       "labels": torch.tensor([self.labels[c] for c in record.category_ids], dtype=torch.int64)}


def _pipeline(steps: Sequence[Callable[[Any], Any]] | None, sanitize: bool) -> ImagePipeline:
    """The config's steps on the uint8 image (and its boxes), then a float image in [0, 1], not normalized:
    the detectors normalize (and resize) images themselves. `sanitize` then drops boxes a crop left empty."""
    return image_pipeline([*(steps or ()), *([v2.SanitizeBoundingBoxes()] if sanitize else [])],
                          mean=UNNORMALIZED[0], std=UNNORMALIZED[1])


def _joint_part(samples: SizedDataset, indices: Sequence[int], pipeline: ImagePipeline) -> JointlyTransformedSubset:
    return JointlyTransformedSubset(samples, indices, pipeline.per_sample())


def _read_splits(root: Path, train: str, val: str | None, test: str | None,
                 images: str | None) -> tuple[list[SizedDataset | None], list[str]]:
    """The three splits (val, test may be None) and the category names, which every file must share."""
    images_dir = None if images is None else root / images
    files = {split: read_coco(root / path, images_dir)
             for split, path in (("train", train), ("val", val), ("test", test)) if path is not None}
    categories = files["train"].categories
    for split, coco in files.items():
        if coco.categories != categories:
            raise UserError(f"COCO file dataset.{split} has categories {coco.categories} but dataset.train has "
                            f"{categories}; export every split with the same label set")
    labels = {category_id: label for label, category_id in enumerate(sorted(categories), start=1)}
    splits: list[SizedDataset | None] = [CocoImages(files[split].images, labels) if split in files else None
                                         for split in ("train", "val", "test")]
    return splits, [categories[category_id] for category_id in sorted(categories)]
