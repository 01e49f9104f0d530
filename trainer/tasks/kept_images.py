"""The first few images an evaluation sees, as a torchmetrics "metric", so evaluation yields them for a grid;
and a grid as the uint8 image the loggers and `predict` take.

Each rank keeps its first `count` images; over DDP ranks the kept images are gathered and the
first `count` returned: (count, C, H, W) floats (none when it was only given empty batches).
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class KeptImages(Metric):
    full_state_update = False
    images: list[torch.Tensor]

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.add_state("images", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor) -> None:
        room = self.count - sum(len(kept) for kept in self.images)
        if room > 0:
            self.images.append(images[:room].detach().float())

    def compute(self) -> torch.Tensor:
        return dim_zero_cat(self.images)[:self.count].cpu()


def to_uint8(grid: torch.Tensor) -> torch.Tensor:
    """A grid of values in [0, 1] (torchvision's `make_grid(..., normalize=True)`) as uint8 pixels."""
    return (grid * 255).round().to(torch.uint8)
