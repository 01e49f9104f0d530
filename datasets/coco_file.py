"""Reading a COCO-format annotation file (what CVAT, Label Studio, Roboflow and COCO itself export).

Only what object detection needs is read: `images` (file_name, width, height), `annotations`
(image_id, bbox as [x, y, width, height] in pixels, category_id, iscrowd) and `categories` (id,
name). Crowd regions (iscrowd=1) are left out, as torchvision's detection references do. Every
box is checked against its image at start, so a bad annotation stops the run with its file,
image and box named instead of failing (or silently training on garbage) many steps later.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decltrain.trainer.errors import UserError


@dataclass(frozen=True)
class AnnotatedImage:
    """One image file with its boxes (x1, y1, x2, y2 in pixels) and their COCO category ids."""
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...]
    category_ids: tuple[int, ...]


@dataclass(frozen=True)
class CocoFile:
    images: list[AnnotatedImage]
    categories: dict[int, str]  # COCO category id -> name


def read_coco(path: Path, images_dir: Path | None) -> CocoFile:
    """The images and boxes of COCO file `path`; `file_name`s are relative to `images_dir`
    (default: the folder of `path`)."""
    if not path.is_file():
        raise UserError(f"COCO annotation file {path.resolve()} does not exist; set dataset.train (and val, test) "
                        "to your annotation files, relative to dataset.root")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(category["id"]): str(category["name"]) for category in content["categories"]}
        images = {int(image["id"]): image for image in content["images"]}
        annotations = [annotation for annotation in content["annotations"] if not annotation.get("iscrowd", 0)]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"COCO annotation file {path} is not COCO detection JSON ({type(err).__name__}: {err}); "
                        "it needs `images`, `annotations` and `categories` lists, as annotation tools export") from None
    if not categories:
        raise UserError(f"COCO annotation file {path} has no categories; export it with its label names")
    folder = images_dir if images_dir is not None else path.parent
    boxes: dict[int, list[tuple[float, float, float, float]]] = {image_id: [] for image_id in images}
    category_ids: dict[int, list[int]] = {image_id: [] for image_id in images}
    for annotation in annotations:
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise UserError(f"COCO annotation file {path}: annotation {annotation.get('id')} refers to image id "
                            f"{annotation.get('image_id')}, which the file does not list")
        if annotation.get("category_id") not in categories:
            raise UserError(f"COCO annotation file {path}: annotation {annotation.get('id')} has category_id "
                            f"{annotation.get('category_id')}, which is not among its categories {sorted(categories)}")
        boxes[image["id"]].append(_checked_box(annotation.get("bbox"), image, path))
        category_ids[image["id"]].append(annotation["category_id"])
    records = [AnnotatedImage(folder / image["file_name"], tuple(boxes[image_id]), tuple(category_ids[image_id]))
               for image_id, image in images.items()]
    missing = [record.path for record in records if not record.path.is_file()]
    if missing:
        raise UserError(f"COCO annotation file {path}: {len(missing)} of its {len(records)} images are missing, "
                        f"e.g. {missing[0]}; set dataset.images to the folder their file_name is relative to")
    if not records:
        raise UserError(f"COCO annotation file {path} lists no images")
    return CocoFile(records, categories)


def _checked_box(bbox: Any, image: dict[str, Any], path: Path) -> tuple[float, float, float, float]:
    """COCO's [x, y, width, height] as (x1, y1, x2, y2), after checking it is a non-empty box inside its image."""
    where = f"COCO annotation file {path}: image {image.get('file_name')!r} (id {image['id']})"
    try:
        x, y, width, height = (float(value) for value in bbox)
        image_width, image_height = float(image["width"]), float(image["height"])
    except (TypeError, ValueError, KeyError):
        raise UserError(f"{where} has box {bbox!r} or size {image.get('width')}x{image.get('height')} that is not "
                        "numbers; a box is [x, y, width, height] and an image needs its width and height") from None
    if width <= 0 or height <= 0:
        raise UserError(f"{where} has the empty box {bbox} (width and height must be positive); fix or remove it")
    if x < 0 or y < 0 or x + width > image_width or y + height > image_height:
        raise UserError(f"{where} has box {bbox} ([x, y, width, height]) outside its {image_width:g}x{image_height:g} "
                        "image; fix or remove this annotation")
    return x, y, x + width, y + height
