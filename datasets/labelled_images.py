"""Images with several labels each: an image folder and a CSV naming each image's labels.

The CSV has an `image` column (a path relative to the images' root) and one 0/1 column per
label; the labels are the other columns, in the CSV's order. Each sample is (RGB PIL image,
float tensor of 0/1 per label), the targets of a multi-label task.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from decltrain.datasets.base import read_csv_rows
from decltrain.trainer.errors import UserError

IMAGE_COLUMN = "image"


class LabelledImages:
    """Laid out as torchvision's ImageFolder is (`root`, `samples`, `targets`), so the image cache reads it too."""

    def __init__(self, root: Path, labels_csv: Path) -> None:
        rows = read_csv_rows(labels_csv, [IMAGE_COLUMN], "dataset.labels")
        self.root = str(root)
        self.classes = [column for column in rows[0] if column != IMAGE_COLUMN]
        if not self.classes:
            raise UserError(f"dataset.labels: {labels_csv} has no label column beside {IMAGE_COLUMN!r}; add one 0/1 "
                            "column per label")
        self.targets: list[list[float]] = []
        self.samples: list[tuple[str, list[float]]] = []
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            path = root / row[IMAGE_COLUMN]
            bad = next((label for label in self.classes if row[label].strip() not in ("0", "1")), None)
            if bad is not None:
                raise UserError(f"{labels_csv} line {line}: label column {bad!r} holds {row[bad]!r}; label columns "
                                "hold 0 or 1")
            if not path.is_file():
                raise UserError(f"{labels_csv} line {line}: image {path} does not exist; image paths are relative "
                                "to dataset.root")
            target = [float(row[label]) for label in self.classes]
            self.targets.append(target)
            self.samples.append((str(path), target))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, torch.Tensor]:
        path, target = self.samples[index]
        with Image.open(path) as image:
            return image.convert("RGB"), torch.tensor(target)
