"""Segmentation data and models: image and mask move together, masks are checked, models score every pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from decltrain.datasets import segmentation_folder
from decltrain.datasets.masks import MaskedImages
from decltrain.models import TorchvisionSegmenter, UNet
from decltrain.trainer.errors import UserError
from tests.helpers.segmentation import PLAIN, write_segmentation_folder

CROP_AND_FLIP = [v2.RandomCrop(16), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "per_sample"])
def test_random_crops_and_flips_move_each_mask_with_its_image(tmp_path, in_memory):
    write_segmentation_folder(tmp_path)
    splits = segmentation_folder.build(str(tmp_path), train_transforms=CROP_AND_FLIP, stored_size=20,
                                       in_memory=in_memory, batch_size=4, **PLAIN)
    torch.manual_seed(0)
    if in_memory:
        assert isinstance(splits.train, MaskedImages)
        images, masks = splits.train.batch(torch.arange(len(splits.train)))
    else:
        images, masks = (torch.stack(part) for part in zip(*(splits.train[i] for i in range(len(splits.train)))))
    assert images.shape[-2:] == masks.shape[-2:] == (16, 16) and masks.dtype == torch.int64
    torch.testing.assert_close((images[:, 0] * 255).round().long(), masks * 80, rtol=0, atol=0)
    assert splits.class_names == ["class_0", "class_1", "class_2"] and splits.num_classes == 3
    assert len(splits.train) == 8 and len(splits.val) == 2 and splits.test is splits.val


def test_a_mask_index_beyond_the_classes_names_the_file(tmp_path):
    write_segmentation_folder(tmp_path)
    Image.fromarray(np.full((20, 20), 7, dtype=np.uint8)).save(tmp_path / "masks" / "3.png")
    with pytest.raises(UserError, match=r"mask .*masks/3\.png holds class index 7, but the dataset has 3 classes"):
        segmentation_folder.build(str(tmp_path), **PLAIN)


def test_the_ignore_index_is_allowed_and_kept(tmp_path):
    write_segmentation_folder(tmp_path, count=5)
    Image.fromarray(np.full((20, 20), 255, dtype=np.uint8)).save(tmp_path / "masks" / "0.png")
    splits = segmentation_folder.build(str(tmp_path), class_names=["a", "b", "c"], val_fraction=0.2, **PLAIN)
    masks = splits.train.targets if isinstance(splits.train, MaskedImages) else None
    assert masks is not None and int(masks.max()) == 255 and splits.class_names == ["a", "b", "c"]


def test_an_image_without_its_mask_is_named(tmp_path):
    write_segmentation_folder(tmp_path, count=3)
    (tmp_path / "masks" / "1.png").unlink()
    with pytest.raises(UserError, match=r"no mask .*masks/<name>\.png, e\.g\. 1\.png"):
        segmentation_folder.build(str(tmp_path), **PLAIN)


def test_fake_segmentation_draws_each_class_in_its_colour():
    splits = segmentation_folder.build("unused", image_size=32, fake=True, fake_num_classes=3, **PLAIN)
    images, masks = splits.val.batch(torch.arange(len(splits.val)))
    assert images.shape == (32, 3, 32, 32) and masks.shape == (32, 32, 32)
    shapes = masks > 0
    assert 0.05 < shapes.float().mean() < 0.6 and set(masks.unique().tolist()) == {0, 1, 2}
    assert (images[:, 0][masks == 1] > 0.8).all() and (images[:, 0][masks == 0] < 0.36).all()  # red shapes, dark noise


@pytest.mark.parametrize("side", [32, 37])
def test_unet_scores_every_pixel_of_any_side(side):
    assert UNet(4, (3, side, side), width=4, depth=3).eval()(torch.randn(2, 3, side, side)).shape == (2, 4, side, side)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_torchvision_segmenters_return_their_out_scores(name):
    assert TorchvisionSegmenter(name, 3, (3, 64, 64)).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_torchvision_segmenter_weights_of_another_class_count_keep_a_fresh_classifier(tmp_path):
    torch.manual_seed(0)
    pretrained = TorchvisionSegmenter("lraspp_mobilenet_v3_large", 21, (3, 64, 64))
    torch.save(pretrained.net.state_dict(), tmp_path / "voc.pth")
    model = TorchvisionSegmenter("lraspp_mobilenet_v3_large", 3, (3, 64, 64), weights=str(tmp_path / "voc.pth"))
    torch.testing.assert_close(model.net.backbone.state_dict(), pretrained.net.backbone.state_dict())
    assert model.net.classifier.low_classifier.out_channels == 3


def test_an_unknown_torchvision_segmenter_lists_the_known_ones():
    with pytest.raises(UserError, match=r"model.name='unet9' is not a torchvision segmentation model; .*deeplabv3_resnet50"):
        TorchvisionSegmenter("unet9", 3, (3, 64, 64))
