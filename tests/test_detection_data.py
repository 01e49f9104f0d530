"""Detection data: COCO files read and checked, boxes moved with their images, generated shapes."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from decltrain.datasets import coco_detection
from decltrain.trainer.errors import UserError
from tests.helpers.coco import write_coco


def test_coco_file_gives_images_boxes_and_category_names(tmp_path):
    write_coco(tmp_path)
    write_coco(tmp_path, "val.json")
    splits = coco_detection.build(str(tmp_path), train="train.json", val="val.json", num_workers=0)
    assert splits.class_names == ["background", "dog", "cat"] and splits.num_classes == 3
    assert (len(splits.train), len(splits.val)) == (2, 2) and splits.test is splits.val
    image, target = splits.train[0]
    assert (image.shape, image.dtype) == ((3, 30, 40), torch.float32)
    # [x, y, w, h] became (x1, y1, x2, y2); COCO category 7 (cat) is label 2, category 3 (dog) label 1
    assert target["boxes"].tolist() == [[2, 4, 12, 12], [20, 10, 35, 22]] and target["labels"].tolist() == [2, 1]
    images, targets = splits.loader.collate_fn([splits.train[0], splits.train[1]])
    assert [tuple(i.shape) for i in images] == [(3, 30, 40)] * 2 and [len(t["labels"]) for t in targets] == [2, 1]


def test_a_flip_moves_the_boxes_and_validation_is_not_flipped(tmp_path):
    write_coco(tmp_path)
    splits = coco_detection.build(str(tmp_path), train_transforms=[v2.RandomHorizontalFlip(p=1.0)],
                                  val_fraction=0.5, num_workers=0)
    flipped, target = splits.train[0]
    raw_image, raw_target = splits.train.base[splits.train.indices[0]]
    assert torch.equal(flipped, raw_image.flip(-1).float() / 255)
    width = raw_image.shape[-1]
    expected = raw_target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    assert torch.equal(target["boxes"], expected)
    _, val_target = splits.val[0]
    assert torch.equal(val_target["boxes"], splits.val.base[splits.val.indices[0]][1]["boxes"])


@pytest.mark.parametrize(("bbox", "problem"), [([30, 10, 15, 12], r"box \[30, 10, 15, 12\] \(\[x, y, width, height\]\) "
                                                "outside its 40x30 image; fix or remove this annotation"),
                                               ([-1, 0, 5, 5], r"box \[-1, 0, 5, 5\] .* outside"),
                                               ([2, 2, 0, 5], r"the empty box \[2, 2, 0, 5\]")])
def test_a_box_outside_its_image_names_file_image_and_box(tmp_path, bbox, problem):
    path = write_coco(tmp_path, boxes={"a.png": [([2, 4, 10, 8], 7)], "b.png": [(bbox, 3)]})
    with pytest.raises(UserError, match=rf"^COCO annotation file {path}: image 'b.png' \(id 2\) has {problem}"):
        coco_detection.build(str(tmp_path))


def test_missing_images_and_mismatched_categories_are_named(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(UserError, match=r"1 of its 2 images are missing, e.g. .*b.png; set dataset.images"):
        coco_detection.build(str(tmp_path))
    with pytest.raises(UserError, match=r"annotation file .*nothing.json does not exist"):
        coco_detection.build(str(tmp_path), train="nothing.json")


def test_generated_shapes_are_fixed_per_sample_with_boxes_around_their_colour():
    splits = coco_detection.build("unused", fake=True, image_size=64, fake_num_classes=3, num_workers=0)
    assert splits.class_names == ["background", "class_1", "class_2", "class_3"] and splits.input_shape == (3, 64, 64)
    image, target = splits.val[0]
    again, _ = splits.val[0]
    assert torch.equal(image, again) and len(splits.train) == 128
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][-1])  # the last shape drawn is on top
    centre = image[:, (y1 + y2) // 2, (x1 + x2) // 2]
    assert centre.min() > 0.1 and set(target["labels"].tolist()) <= {1, 2, 3}
    assert not torch.equal(splits.train[0][0], image)  # the splits hold different images
