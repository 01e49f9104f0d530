"""Your own images: `root/train/<class>/*.png`, with optional `root/val/` and `root/test/` alike.

Without `val/`, a validation set is carved from `train/` (fixed seed); without `test/`, the
validation set is also the test set. Class names are the folder names, sorted.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from decltrain.datasets.base import DataSplits, loader_settings
from decltrain.datasets.images import fake_images, image_pipeline, image_splits
from decltrain.trainer.errors import UserError

LAYOUT = "root/train/<class name>/<image files>, optional root/val/... and root/test/... alike"


def build(root: str, mean: list[float], std: list[float], train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, val_fraction: float = 0.2,
          val_split_seed: int = 0, image_size: int = 224, fake: bool = False, fake_num_classes: int = 2,
          **loader: Any) -> DataSplits:
    """Reads the folder (as RGB images), or with `fake` generates random RGB images.

    `image_size` is the side the configured transforms produce; fake images are generated at
    that size, in `fake_num_classes` classes.
    """
    if fake:
        train, val, test = fake_images((3, image_size, image_size), fake_num_classes)
        class_names = [f"class_{i}" for i in range(fake_num_classes)]
    else:
        train = _read(Path(root), "train", required=True)
        val, test = _read(Path(root), "val"), _read(Path(root), "test")
        class_names = train.classes
        for split, folder in (("val", val), ("test", test)):
            if folder is not None and folder.classes != class_names:
                raise UserError(f"image folder {Path(root) / split} has classes {folder.classes} but train/ has "
                                f"{class_names}; give every split the same class folders")
    return image_splits(train, val, test, class_names=list(class_names),
                        train_transform=image_pipeline(train_transforms, mean, std),
                        eval_transform=image_pipeline(eval_transforms, mean, std), val_fraction=val_fraction,
                        val_split_seed=val_split_seed, name=f"imagefolder:{Path(root).name}",
                        loader=loader_settings(**loader))


def _read(root: Path, split: str, required: bool = False) -> ImageFolder | None:
    folder = root / split
    if not folder.is_dir():
        if required:
            raise UserError(f"image folder {folder.resolve()} does not exist; lay out your images as {LAYOUT} "
                            "and set dataset.root")
        return None
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as err:  # no class folder, or a class folder without images
        raise UserError(f"image folder {folder.resolve()}: {err}; lay out your images as {LAYOUT}") from None
