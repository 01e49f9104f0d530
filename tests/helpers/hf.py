"""Hugging Face datasets the tests write themselves (needs the `hf` extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image_parquet(path: Path, count: int = 60) -> Path:
    """`count` random 8x8 RGB images in 3 classes (cat, dog, eel), through `datasets`' own parquet writer."""
    import datasets  # Hugging Face's (tests/conftest.py imports it ahead of the repository's folder)

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(count)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "eel"])})
    table = datasets.Dataset.from_dict({"img": images, "label": [i % 3 for i in range(count)]}, features=features)
    table.to_parquet(str(path))
    return path
