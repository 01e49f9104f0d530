"""The confusion matrix as an image for TensorBoard, drawn with PIL (no plotting library)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor

MAX_NAME = 16  # characters of a class name shown


def confusion_image(matrix: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
    """A uint8 (3, H, W) image: rows are true classes, columns predicted ones.

    A cell's shade is its share of the row (so the diagonal reads as per-class recall); the
    number is the count. Columns are labelled by class index, rows by index and name.
    """
    counts = matrix.detach().cpu().long()
    k = counts.shape[0]
    names = class_names if len(class_names) == k else [str(i) for i in range(k)]
    labels = [name[:MAX_NAME] if name == str(i) else f"{i} {name[:MAX_NAME]}" for i, name in enumerate(names)]
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    cell = max(12, min(40, 1200 // k))
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(probe.textlength(label, font=font) for label in [*labels, "true \\ pred"])) + 10
    top = 18
    image = Image.new("RGB", (left + k * cell + 1, top + k * cell + 1), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), "true \\ pred", fill="black", font=font)
    for j in range(k):
        draw.text((left + j * cell + 3, 3), str(j), fill="black", font=font)
    for i in range(k):
        y = top + i * cell
        draw.text((4, y + cell // 2 - 6), labels[i], fill="black", font=font)
        for j in range(k):
            x = left + j * cell
            share = float(shares[i, j])
            shade = (int(255 - 225 * share), int(255 - 160 * share), 255)  # white to deep blue
            draw.rectangle((x, y, x + cell, y + cell), fill=shade, outline=(200, 200, 200))
            if cell >= 24:
                draw.text((x + 3, y + cell // 2 - 6), str(int(counts[i, j])),
                          fill="white" if share > 0.55 else "black", font=font)
    return pil_to_tensor(image)
