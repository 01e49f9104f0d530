"""Segmentation folders the tests write, and the normalization that leaves pixels readable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Pixels scaled to [0, 1] and left unnormalized, so a test can read the image's value back.
PLAIN = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def write_segmentation_folder(root: Path, count: int = 10, side: int = 20, classes: int = 3) -> None:
    """Images whose grey level is 80 x the class of each pixel: a moved mask no longer matches its image."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(f"class_{i}" for i in range(classes)) + "\n")
    generator = np.random.default_rng(0)
    for index in range(count):
        mask = generator.integers(0, classes, (side, side), dtype=np.uint8)
        Image.fromarray(np.repeat(mask[..., None] * 80, 3, axis=2)).save(root / "images" / f"{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
