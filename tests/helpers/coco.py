"""A small COCO-format detection dataset on disk, as annotation tools export one."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# Two 40x30 images: the first with a cat and a dog box, the second with one dog box.
BOXES = {"a.png": [([2, 4, 10, 8], 7), ([20, 10, 15, 12], 3)], "b.png": [([0, 0, 40, 30], 3)]}
CATEGORIES = [{"id": 3, "name": "dog"}, {"id": 7, "name": "cat"}]


def write_coco(folder: Path, name: str = "train.json", boxes: dict | None = None) -> Path:
    """Images of 40x30 pixels beside annotation file `name`, with `boxes` ({file: [(xywh, category_id)]})."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (file_name, image_boxes) in enumerate((boxes or BOXES).items(), start=1):
        Image.new("RGB", (40, 30), color=(10 * image_id, 0, 0)).save(folder / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": 40, "height": 30})
        annotations += [{"id": len(annotations) + 1, "image_id": image_id, "bbox": bbox, "category_id": category,
                         "area": bbox[2] * bbox[3], "iscrowd": 0} for bbox, category in image_boxes]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path
