"""Your own segmentation data: `root/images/<name>.<png|jpg>` with `root/masks/<name>.png` beside them.

A mask is a single-channel PNG of class indices (0 for the first class name, 1 for the next,
...), the size of its image; `ignore_index` (255 by default) marks pixels no loss or metric
counts. Class names come from `class_names` or, when that is null, `root/classes.txt` (one per
line). A validation set is carved from the pairs (fixed seed) and is also the test set. With
`in_memory` (the default) every pair is decoded once, its shorter side resized to `stored_size`
and the centre square cropped, and transformed per batch on the training device; without it,
each pair is decoded and transformed every epoch in the DataLoader workers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from decltrain.datasets.base import DataSplits, SizedDataset, loader_settings
from decltrain.datasets.images import ImagePipeline, image_pipeline, split_parts
from decltrain.datasets.masks import MaskedImages, fake_masked_images, paired_part, per_sample_part
from decltrain.trainer.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LAYOUT = "root/images/<name>.png|jpg and root/masks/<name>.png (class indices), class names in root/classes.txt"


def build(root: str, mean: list[float], std: list[float], train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, class_names: list[str] | None = None,
          ignore_index: int = 255, val_fraction: float = 0.2, val_split_seed: int = 0, image_size: int = 256,
          fake: bool = False, fake_num_classes: int = 3, in_memory: bool = True, stored_size: int | None = None,
          **loader: Any) -> DataSplits:
    """Reads the folder, or with `fake` generates `image_size` images of coloured shapes on noise.

    `stored_size` (in-memory only; default `image_size` x 1.15, room for random crops) is the
    side each pair is stored at.
    """
    train: SizedDataset
    val: SizedDataset | None = None
    test: SizedDataset | None = None
    if fake:
        names = ["background", *(f"shape_{i}" for i in range(1, fake_num_classes))]
        train, val, test = fake_masked_images(image_size, fake_num_classes)
    else:
        folder = Path(root)
        names = list(class_names) if class_names else _class_file(folder)
        files = _pairs(folder)
        _check_masks(files, len(names), ignore_index)
        size = math.ceil(image_size * 1.15) if stored_size is None else stored_size
        train = _decode(files, size) if in_memory else MaskFiles(files)
    train_pipeline, eval_pipeline = (image_pipeline(steps, mean, std) for steps in (train_transforms, eval_transforms))
    # In memory every split is `MaskedImages` (decoded or generated), which `paired_part` takes.
    part: Callable[[Any, Sequence[int], ImagePipeline], Dataset] = paired_part if in_memory else per_sample_part
    train_part, val_part, test_part = split_parts(train, val, test, part, train_pipeline, eval_pipeline,
                                                  val_fraction, val_split_seed)
    image, _ = test_part[0]
    return DataSplits(train=train_part, val=val_part, test=test_part, num_classes=len(names),
                      input_shape=tuple(image.shape), loader=loader_settings(**loader), class_names=names,
                      task="segmentation", name="segmentation:fake" if fake else f"segmentation:{Path(root).name}",
                      eval_transform=eval_pipeline.per_sample())


class MaskFiles(Dataset):
    """(RGB image, uint8 mask (H, W)) pairs read from their files at each access."""

    def __init__(self, files: list[tuple[Path, Path]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, torch.Tensor]:
        image_path, mask_path = self.files[index]
        with Image.open(image_path) as image:
            rgb = image.convert("RGB")
        return rgb, read_mask(mask_path)


def read_mask(path: Path) -> torch.Tensor:
    """A mask PNG as a uint8 (H, W) tensor of class indices."""
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P", "1"):
            raise UserError(f"mask {path} is a {mask.mode} image; save masks as single-channel PNGs of class "
                            "indices (mode L or P)")
        return torch.from_numpy(np.array(mask, dtype=np.uint8))


def _class_file(root: Path) -> list[str]:
    path = root / "classes.txt"
    if not path.is_file():
        raise UserError(f"segmentation folder {root.resolve()} has no classes.txt; write the class names there, "
                        "one per line (index 0 first), or set dataset.class_names=[background,...]")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise UserError(f"{path} names {len(names)} class(es); a segmentation needs at least two (e.g. background)")
    return names


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    """Each image of `root/images` with its mask `root/masks/<same name>.png`, sorted by name."""
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        if not folder.is_dir():
            raise UserError(f"segmentation folder {folder.resolve()} does not exist; lay out your data as {LAYOUT} "
                            "and set dataset.root")
    files = sorted(path for path in images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{images.resolve()} holds no images ({', '.join(IMAGE_SUFFIXES)}); lay out your data as {LAYOUT}")
    missing = [path.name for path in files if not (masks / f"{path.stem}.png").is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) in {images} have no mask {masks}/<name>.png, e.g. {missing[0]}; "
                        "give each image a mask of the same name")
    return [(path, masks / f"{path.stem}.png") for path in files]


def _check_masks(files: list[tuple[Path, Path]], num_classes: int, ignore_index: int) -> None:
    """Fails on the first mask holding an index that is neither a class nor `ignore_index`."""
    for _, mask_path in files:
        values = read_mask(mask_path).unique().tolist()
        wrong = [value for value in values if value >= num_classes and value != ignore_index]
        if wrong:
            raise UserError(f"mask {mask_path} holds class index {wrong[0]}, but the dataset has {num_classes} "
                            f"classes (0-{num_classes - 1}, {ignore_index} = ignored); fix the mask or name more "
                            "classes (dataset.class_names or classes.txt)")


def _decode(files: list[tuple[Path, Path]], size: int) -> MaskedImages:
    """Every pair once, shorter side resized to `size` (masks by nearest neighbour) and centre-cropped."""
    source = MaskFiles(files)
    images, masks = [], []
    for index in range(len(source)):
        image, mask = source[index]
        tensor = TF.center_crop(TF.resize(TF.to_image(image), [size], antialias=True), [size])
        images.append(tensor.as_subclass(torch.Tensor))
        masks.append(TF.center_crop(TF.resize(mask[None], [size], interpolation=TF.InterpolationMode.NEAREST), [size])[0])
    return MaskedImages(torch.stack(images).contiguous(), torch.stack(masks).contiguous())
