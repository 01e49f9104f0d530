"""Generated detection images with real structure: coloured shapes on noise, with their boxes.

Each class has its own colour and shape (odd classes rectangles, even ones ellipses), so a
working detector learns them within a few epochs; `dataset.fake=true` uses them where no files
exist. Sample `index` is drawn from its own seed, so it is the same in every epoch and worker.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors

# One colour per class (1-based; 0 is the background), cycled past the eighth class.
PALETTE = ((230, 40, 40), (40, 90, 230), (40, 200, 60), (240, 200, 30), (200, 60, 220), (30, 210, 220),
           (250, 130, 20), (240, 240, 240))
MAX_SHAPES = 3


class ShapeImages:
    """`count` RGB images of `size` x `size` pixels with 1 to 3 shapes of classes 1..`num_classes` each."""

    def __init__(self, count: int, size: int, num_classes: int, seed: int) -> None:
        self.count, self.size, self.num_classes, self.seed = count, size, num_classes, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        side = self.size
        image = torch.randint(0, 90, (3, side, side), generator=generator, dtype=torch.uint8)
        rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, MAX_SHAPES + 1, (1,), generator=generator))):
            label = int(torch.randint(1, self.num_classes + 1, (1,), generator=generator))
            width, height = (int(v) for v in torch.randint(side // 5, side // 2 + 1, (2,), generator=generator))
            x1 = int(torch.randint(0, side - width + 1, (1,), generator=generator))
            y1 = int(torch.randint(0, side - height + 1, (1,), generator=generator))
            if label % 2:
                inside = (rows >= y1) & (rows < y1 + height) & (columns >= x1) & (columns < x1 + width)
            else:
                inside = (((columns + 0.5 - x1 - width / 2) / (width / 2)) ** 2
                          + ((rows + 0.5 - y1 - height / 2) / (height / 2)) ** 2) <= 1
            colour = torch.tensor(PALETTE[(label - 1) % len(PALETTE)], dtype=torch.uint8)
            image[:, inside] = colour[:, None]
            boxes.append([x1, y1, x1 + width, y1 + height])
            labels.append(label)
        target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY",
                                                    canvas_size=(side, side)),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        return tv_tensors.Image(image), target
