"""A hand-written segmentation loop: the baseline of `benchmark.py --mode segmentation`.

The data of `train config=segmentation_folder dataset.fake=true` (generated 3x128x128 images of
coloured shapes on noise, their masks; datasets/masks.py), held in memory as uint8 and
normalized per batch; the U-Net of models/unet.py; Adam at 1e-3, batch 16, shuffled; per-pixel
cross-entropy; after each epoch a validation pass (loss and pixel accuracy), as the toolkit
validates. It prints one JSON line per epoch and one at the end with the test pixel accuracy.

    python scripts/handwritten_segmentation.py --epochs 3
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from decltrain.datasets.masks import MaskedImages, fake_masked_images
from decltrain.models.unet import UNet

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def batches(data: MaskedImages, order: torch.Tensor, size: int,
            device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(order), size):
        index = order[start:start + size]
        images = (data.inputs[index].to(device).float() / 255 - MEAN.to(device)) / STD.to(device)
        yield images, data.targets[index].to(device).long()


def evaluate(model: nn.Module, data: MaskedImages, device: torch.device) -> dict[str, float]:
    """Mean per-pixel loss and pixel accuracy over `data`."""
    model.eval()
    loss = correct = total = 0.0
    with torch.no_grad():
        for images, masks in batches(data, torch.arange(len(data)), 32, device):
            outputs = model(images)
            loss += float(F.cross_entropy(outputs, masks, ignore_index=255, reduction="sum"))
            correct += int((outputs.argmax(dim=1) == masks).sum())
            total += masks.numel()
    return {"loss": loss / total, "pixel_acc": correct / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-batches", type=int, default=None, help="stop each epoch after N batches")
    parser.add_argument("--data-dir", default="", help="unused: the data is generated (the benchmark passes it)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--width", type=int, default=32, help="the U-Net's first-level channels")
    args = parser.parse_args()
    device = torch.device(args.device)
    train, val, test = fake_masked_images(128, 3)
    torch.manual_seed(args.seed)
    model = UNet(3, (3, 128, 128), width=args.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for step, (images, masks) in enumerate(batches(train, torch.randperm(len(train)), 16, device)):
            if args.limit_batches is not None and step >= args.limit_batches:
                break
            loss = F.cross_entropy(model(images), masks, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_loss = evaluate(model, val, device)["loss"]
        print(json.dumps({"epoch": epoch, "seconds": time.perf_counter() - start, "val_loss": val_loss}), flush=True)
    print(json.dumps({"test_acc": evaluate(model, test, device)["pixel_acc"]}), flush=True)


if __name__ == "__main__":
    main()
