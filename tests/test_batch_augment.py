"""Batched augmentation (datasets/batch_augment.py) against torchvision's per-image transforms.

Where the parameters are the same, the pixels are torchvision's (exact, or within one uint8 level
where its uint8 kernels round in fixed point); the batched draws follow torchvision's distribution.
"""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from decltrain.datasets.batch_augment import batch_form, crop_boxes
from decltrain.datasets.images import image_pipeline

CPU = torch.device("cpu")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def smooth_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 3, side, side) images of smooth colour gradients, like photos, unlike noise."""
    coarse = torch.randint(0, 256, (count, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return TF.resize(coarse, [side, side], antialias=True)


def levels_apart(batched: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (batched.int() - reference.int()).abs()


def test_crop_boxes_follow_torchvision_draws_in_distribution():
    torch.manual_seed(0)
    step = v2.RandomResizedCrop(32, scale=(0.3, 1.0), antialias=True)
    height, width, count = 40, 60, 4000
    ours = torch.stack(crop_boxes(step, count, height, width, CPU), dim=1).float()
    theirs = torch.tensor([list(step.make_params([torch.zeros(3, height, width)]).values()) for _ in range(count)],
                          dtype=torch.float)
    for boxes in (ours, theirs):
        top, left, box_h, box_w = boxes.unbind(dim=1)
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + box_h <= height).all() and (left + box_w <= width).all()

    def statistics(boxes: torch.Tensor) -> torch.Tensor:
        top, left, box_h, box_w = boxes.unbind(dim=1)
        features = torch.stack([box_h * box_w / (height * width), (box_w / box_h).log(),
                                top / (height - box_h + 1), left / (width - box_w + 1)], dim=1)
        return torch.cat([features.mean(dim=0), features.std(dim=0)])
    assert torch.allclose(statistics(ours), statistics(theirs), atol=0.02)


def test_a_box_that_never_fits_falls_back_to_torchvision_centre_crop():
    step = v2.RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(2.0, 2.0))  # twice as wide as a square can hold
    expected = step.make_params([torch.zeros(3, 20, 20)])
    boxes = crop_boxes(step, 5, 20, 20, CPU)
    assert [box.tolist() for box in boxes] == [[value] * 5 for value in expected.values()]


def test_a_whole_image_crop_to_its_own_size_gives_the_exact_pixels():
    images = smooth_images(4, 24)
    crop = batch_form(v2.RandomResizedCrop(24, scale=(1.0, 1.0), ratio=(1.0, 1.0), antialias=True))
    assert torch.equal(crop(images), images)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_resized_crops_are_torchvision_resized_crops_of_each_box(interpolation: str, layout: torch.memory_format):
    """Boxes larger and smaller than the output (antialiased shrinks too): torchvision's pixels exactly."""
    images = smooth_images(16, 48).contiguous(memory_format=layout)
    step = v2.RandomResizedCrop(40, scale=(0.2, 1.0), interpolation=InterpolationMode(interpolation), antialias=True)
    torch.manual_seed(1)
    batched = batch_form(step)(images)
    torch.manual_seed(1)
    boxes = list(zip(*(box.tolist() for box in crop_boxes(step, 16, 48, 48, CPU))))
    assert min(max(box[2:]) for box in boxes) < 40 < max(max(box[2:]) for box in boxes)  # enlarged and shrunk
    expected = torch.stack([TF.resized_crop(image, *box, [40, 40], interpolation=step.interpolation, antialias=True)
                            for image, box in zip(images, boxes)])
    assert batched.shape == (16, 3, 40, 40) and torch.equal(batched, expected)
    assert batched.is_contiguous()  # the usual layout, whatever the input's


@pytest.mark.parametrize("interpolation, fill", [("nearest", 0), ("nearest", (10, 20, 30)), ("bilinear", 0),
                                                 ("bilinear", None)])
def test_rotations_are_torchvision_rotations_with_an_angle_per_image(interpolation: str, fill):
    images = smooth_images(12, 32)
    step = v2.RandomRotation(30, interpolation=InterpolationMode(interpolation), fill=fill)
    torch.manual_seed(2)
    batched = batch_form(step)(images)
    torch.manual_seed(2)
    angles = torch.empty(12).uniform_(-30, 30)  # the batched form's draw: one uniform angle per image
    expected = torch.stack([TF.rotate(image, angle.item(), interpolation=InterpolationMode(interpolation), fill=fill)
                            for image, angle in zip(images, angles)])
    apart = levels_apart(batched, expected)
    # nearest: the same pixels; bilinear: a level apart where float rounding tips a half (a few in 10^5)
    assert apart.max() <= (0 if interpolation == "nearest" else 1) and (apart > 0).float().mean() < 1e-4
    assert len({tuple(image.flatten()[:50].tolist()) for image in batched}) == 12  # each image its own angle


def test_a_zero_rotation_gives_the_exact_pixels():
    images = smooth_images(4, 20)
    for interpolation in (InterpolationMode.NEAREST, InterpolationMode.BILINEAR):
        assert torch.equal(batch_form(v2.RandomRotation((0, 0), interpolation=interpolation))(images), images)


def test_color_jitter_is_torchvision_jitter_with_factors_and_order_per_image():
    images = smooth_images(24, 16)
    step = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    torch.manual_seed(3)
    batched = batch_form(step)(images)
    torch.manual_seed(3)  # the batched form's draws: the four factors per image, then an order per image
    bounds = (step.brightness, step.contrast, step.saturation, step.hue)
    factors = [torch.empty(24).uniform_(*low_high) for low_high in bounds]
    orders = torch.rand(24, 4).argsort(dim=1)
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    expected = []
    for index, image in enumerate(images):
        for which in orders[index].tolist():
            image = adjust[which](image, factors[which][index].item())
        expected.append(image)
    apart = levels_apart(batched, torch.stack(expected))
    # torchvision truncates to uint8 after each adjustment; float rounding rarely tips one a level
    assert apart.max() <= 1 and (apart > 0).float().mean() < 1e-3
    assert len({tuple(order) for order in orders.tolist()}) > 15  # many of the 24 orders in one batch


def test_evaluation_resize_and_centre_crop_run_once_on_the_batch_with_the_per_image_pixels():
    images = smooth_images(6, 40)
    steps = [v2.Resize(28, antialias=True), v2.CenterCrop(24)]
    per_sample = torch.stack([image_pipeline(steps, MEAN, STD).per_sample()(image) for image in images])
    assert all(batch_form(step) is step for step in steps)
    assert torch.equal(image_pipeline(steps, MEAN, STD).per_batch()(images), per_sample)


def test_the_image_folder_recipe_has_the_statistics_of_the_per_image_pipeline():
    """The shipped training steps, batched and per image, on the same images: per-channel mean and spread."""
    torch.manual_seed(0)
    images = smooth_images(300, 37)
    steps = [v2.RandomResizedCrop(32, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip(),
             v2.RandomRotation(10), v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    pipeline = image_pipeline(steps, MEAN, STD)
    batched = pipeline.per_batch()(images)
    per_sample = torch.stack([pipeline.per_sample()(image) for image in images])
    assert batched.shape == per_sample.shape == (300, 3, 32, 32)
    assert torch.allclose(batched.mean(dim=(0, 2, 3)), per_sample.mean(dim=(0, 2, 3)), atol=0.03)
    assert torch.allclose(batched.std(dim=(0, 2, 3)), per_sample.std(dim=(0, 2, 3)), rtol=0.03)
