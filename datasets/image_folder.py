"""Your own images: `root/train/<class>/*.png`, with optional `root/val/` and `root/test/` alike;
or, with several labels per image, images anywhere under `root` and a labels CSV
(datasets/labelled_images.py), whose validation set is carved out and also tested.

Without `val/`, a validation set is carved from `train/` (fixed seed); without `test/`, the
validation set is also the test set. Class names are the folder names, sorted. With `cache`
(the default) each split is decoded once into a memory-mapped array (datasets/image_cache.py)
and transformed per batch on the training device; without it, PIL decodes every image every
epoch in the DataLoader workers.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from decltrain.datasets.base import DataSplits, SizedDataset, loader_settings
from decltrain.datasets.image_cache import cached_folder, default_cache_dir
from decltrain.datasets.images import fake_images, image_pipeline, image_splits
from decltrain.datasets.in_memory import decode_images
from decltrain.datasets.labelled_images import LabelledImages
from decltrain.trainer.errors import UserError

LAYOUT = "root/train/<class name>/<image files>, optional root/val/... and root/test/... alike"


def build(root: str, mean: list[float], std: list[float], train_transforms: list[Callable[[Any], Any]] | None = None,
          eval_transforms: list[Callable[[Any], Any]] | None = None, val_fraction: float = 0.2,
          val_split_seed: int = 0, image_size: int = 224, fake: bool = False, fake_num_classes: int = 2,
          cache: bool = True, cache_dir: str | None = None, cache_size: int | None = None, labels: str | None = None,
          **loader: Any) -> DataSplits:
    """Reads the folder (as RGB images), or with `fake` generates random RGB images.

    `image_size` is the side the configured transforms produce; fake images are generated at
    that size, in `fake_num_classes` classes. `cache` stores each image once with its shorter
    side resized to `cache_size` (default: `image_size` x 1.15, room for random crops) and the
    centre square cropped, in `cache_dir` (default `~/.cache/decltrain/images`). `labels` (a CSV,
    relative to `root` or absolute) makes the images multi-label.
    """
    train: SizedDataset
    val: SizedDataset | None
    test: SizedDataset | None
    if fake:
        train, val, test = fake_images((3, image_size, image_size), fake_num_classes)
        class_names = [f"class_{i}" for i in range(fake_num_classes)]
    elif labels is not None:
        train, val, test = LabelledImages(Path(root), Path(root) / labels), None, None
        class_names = train.classes
    else:
        train, val, test, class_names = read_folders(Path(root))
    size = math.ceil(image_size * 1.15) if cache_size is None else cache_size
    if size < 1:
        raise UserError(f"dataset.cache_size={cache_size} must be at least 1 (or null for image_size x 1.15)")
    decode = None
    if cache:
        decode = decode_images if fake else partial(
            cached_folder, size=size, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
            workers=loader.get("num_workers", 0))
    return image_splits(train, val, test, class_names=list(class_names),
                        train_transform=image_pipeline(train_transforms, mean, std),
                        eval_transform=image_pipeline(eval_transforms, mean, std), val_fraction=val_fraction,
                        val_split_seed=val_split_seed, name=f"imagefolder:{Path(root).name}",
                        loader=loader_settings(**loader), decode=decode,
                        task="multilabel" if labels is not None and not fake else "multiclass")


def read_folders(root: Path) -> tuple[ImageFolder, ImageFolder | None, ImageFolder | None, list[str]]:
    """The splits of `root` (val/ and test/ may be missing) and the class names they share."""
    train = _read(root / "train")
    val, test = (_read(root / split) if (root / split).is_dir() else None for split in ("val", "test"))
    for split, folder in (("val", val), ("test", test)):
        if folder is not None and folder.classes != train.classes:
            raise UserError(f"image folder {root / split} has classes {folder.classes} but train/ has "
                            f"{train.classes}; give every split the same class folders")
    return train, val, test, train.classes


def _read(folder: Path) -> ImageFolder:
    if not folder.is_dir():
        raise UserError(f"image folder {folder.resolve()} does not exist; lay out your images as {LAYOUT} "
                        "and set dataset.root")
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as err:  # no class folder, or a class folder without images
        raise UserError(f"image folder {folder.resolve()}: {err}; lay out your images as {LAYOUT}") from None
