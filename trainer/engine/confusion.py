"""The confusion matrix as an image for TensorBoard, drawn with PIL (no plotting library).

Sized for TensorBoard's default image card (about 400 pixels wide): a 10-class matrix is drawn
about that wide with 14-pixel text, so the card shows it near full size and the counts stay
legible (drawn larger, the card shrinks it and small digits blur: a 0 reads as a C).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor

MAX_NAME = 16  # characters of a class name shown
FONT_SIZE = 14
MIN_CELL = 30  # pixels; wider when the largest count needs it


def row_labels(class_names: Sequence[str], k: int) -> list[str]:
    """Each true class by its index (the columns' label) and name, once: `0 - zero` stays as it is."""
    if len(class_names) != k:
        return [str(i) for i in range(k)]
    return [name[:MAX_NAME] if name.split(" ", 1)[0] == str(i) else f"{i} {name[:MAX_NAME]}"
            for i, name in enumerate(class_names)]


def confusion_image(matrix: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
    """A uint8 (3, H, W) image: rows are true classes, columns predicted ones.

    A cell's shade is its share of the row (so the diagonal reads as per-class recall); the
    number is the count. Columns are labelled by class index, rows by index and name.
    """
    counts = matrix.detach().cpu().long()
    k = counts.shape[0]
    labels = row_labels(class_names, k)
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    font = ImageFont.load_default(size=FONT_SIZE)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cell = max(MIN_CELL, int(probe.textlength(str(int(counts.max())), font=font)) + 8)
    left = int(max(probe.textlength(label, font=font) for label in [*labels, "true \\ pred"])) + 12
    top = FONT_SIZE + 10
    image = Image.new("RGB", (left + k * cell + 1, top + k * cell + 1), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), "true \\ pred", fill="black", font=font)
    for j in range(k):
        draw.text((left + j * cell + cell // 2, 4), str(j), fill="black", font=font, anchor="ma")
    for i in range(k):
        y = top + i * cell
        draw.text((4, y + cell // 2), labels[i], fill="black", font=font, anchor="lm")
        for j in range(k):
            x = left + j * cell
            share = float(shares[i, j])
            shade = (int(255 - 225 * share), int(255 - 160 * share), 255)  # white to deep blue
            draw.rectangle((x, y, x + cell, y + cell), fill=shade, outline=(200, 200, 200))
            draw.text((x + cell // 2, y + cell // 2), str(int(counts[i, j])),
                      fill="white" if share > 0.55 else "black", font=font, anchor="mm")
    return pil_to_tensor(image)
