"""Images with a mask of class indices per pixel: transformed together, per sample or per batch.

A transforms.v2 step given an image and a `tv_tensors.Mask` draws its parameters once and
applies them to both (a random crop or flip moves the mask with the image; masks are resized
with nearest neighbours); colour steps and the final float conversion and normalization leave
the mask alone. So the configured pipeline (`datasets.images.ImagePipeline`) serves images and
masks unchanged, and the same pipeline alone turns a new image into a model input for `predict`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from decltrain.datasets.base import FAKE_SIZES, SizedDataset
from decltrain.datasets.images import ImagePipeline
from decltrain.datasets.in_memory import BatchTransform, InMemory


class PairedBatchTransform(BatchTransform):
    """`BatchTransform` for (images, masks) batches: each pair goes through the steps together.

    The steps run image by image (a draw per image from the global RNG, which checkpoints save),
    then the batch is converted and normalized at once as for classification.
    """

    def __init__(self, pipeline: ImagePipeline) -> None:
        super().__init__((), pipeline.mean, pipeline.std)
        self.steps = v2.Compose(list(pipeline.steps)) if pipeline.steps else None

    def augment_pairs(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.steps is None:
            return images, masks
        pairs = [self.steps(tv_tensors.Image(image), tv_tensors.Mask(mask)) for image, mask in zip(images, masks)]
        return (torch.stack([image.as_subclass(torch.Tensor) for image, _ in pairs]).contiguous(),
                torch.stack([mask.as_subclass(torch.Tensor) for _, mask in pairs]))


class MaskedImages(InMemory):
    """uint8 images (N, C, H, W) with uint8 masks (N, H, W), batched on the device; masks come out int64."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, transform: PairedBatchTransform | None = None) -> None:
        super().__init__(inputs, targets, transform)
        self.paired = transform

    def augmented_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self.inputs.index_select(0, indices), self.targets.index_select(0, indices)
        if self.paired is not None:
            images, masks = self.paired.augment_pairs(images, masks)
        return images, masks.long()

    def subset(self, indices: Sequence[int], transform: Callable[[torch.Tensor], torch.Tensor] | None) -> MaskedImages:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        paired = transform if isinstance(transform, PairedBatchTransform) else None
        return MaskedImages(self.inputs[index], self.targets[index], paired)

    def to(self, device: torch.device) -> MaskedImages:
        if self.device == device:
            return self
        return MaskedImages(self.inputs.to(device), self.targets.to(device), self.paired)


def paired_part(pairs: MaskedImages, indices: Sequence[int], pipeline: ImagePipeline) -> MaskedImages:
    """The samples `indices` of decoded pairs, transformed per batch on the training device."""
    return pairs.subset(indices, PairedBatchTransform(pipeline))


class PairedSubset(Dataset):
    """The samples `indices` of a dataset of (image, mask) pairs, each pair transformed together."""

    def __init__(self, base: SizedDataset, indices: Sequence[int], pipeline: ImagePipeline) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = pipeline.per_sample()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.base[self.indices[index]]
        image, mask = self.transform(image, tv_tensors.Mask(mask))
        return image, mask.as_subclass(torch.Tensor).long()


def per_sample_part(pairs: SizedDataset, indices: Sequence[int], pipeline: ImagePipeline) -> PairedSubset:
    return PairedSubset(pairs, indices, pipeline)


# Colours of the fake classes' shapes (class 0 is the noisy background); more classes repeat them darker.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def fake_masked_images(side: int, num_classes: int) -> tuple[MaskedImages, MaskedImages, MaskedImages]:
    """Train, val and test sets of noisy images with 1-3 rectangles or discs, each of a class's colour.

    The mask is the shape's class (0 elsewhere): a model that learns anything beats predicting
    background everywhere, so a short test run shows learning. Each split has its own seed.
    """
    return tuple(_fake_split(count, side, num_classes, seed)  # type: ignore[return-value]  # three splits
                 for seed, count in enumerate(FAKE_SIZES))


def _fake_split(count: int, side: int, num_classes: int, seed: int) -> MaskedImages:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 90, (count, 3, side, side), generator=generator, dtype=torch.uint8)
    masks = torch.zeros(count, side, side, dtype=torch.uint8)
    rows, cols = torch.arange(side).view(-1, 1), torch.arange(side).view(1, -1)
    for index in range(count):
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            label = int(torch.randint(1, num_classes, (1,), generator=generator))
            size, top, left = (int(value) for value in torch.randint(side // 6, side // 2, (3,), generator=generator))
            top, left = top % (side - size), left % (side - size)
            inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
            if torch.rand(1, generator=generator) < 0.5:  # a disc in that square
                inside &= (rows - top - size / 2) ** 2 + (cols - left - size / 2) ** 2 <= (size / 2) ** 2
            colour = torch.tensor(PALETTE[(label - 1) % len(PALETTE)]) // (1 + (label - 1) // len(PALETTE))
            images[index][:, inside] = colour.to(torch.uint8).view(3, 1)
            masks[index][inside] = label
    return MaskedImages(images, masks)

