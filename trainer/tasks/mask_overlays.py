"""A few predicted masks drawn over their images, as a torchmetrics "metric" so evaluation yields it as an image.

The first `count` samples an evaluation sees are kept (on each rank; over DDP ranks the kept
samples are gathered and the first `count` drawn). `compute` returns one uint8 (3, H, W) grid:
the images with their predicted masks on the top row, with their true masks below.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchvision.utils import draw_segmentation_masks, make_grid

# Class colours (class 0, usually background, is left undrawn); more classes cycle through them.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


class MaskOverlays(Metric):
    full_state_update = False
    images: list[torch.Tensor]
    predicted: list[torch.Tensor]
    true: list[torch.Tensor]

    def __init__(self, num_classes: int, count: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.count = count
        self.add_state("images", default=[], dist_reduce_fx="cat")
        self.add_state("predicted", default=[], dist_reduce_fx="cat")
        self.add_state("true", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor) -> None:
        """`images` (N, C, H, W) as the model saw them (any scale), class indices (N, H, W) predicted and true."""
        room = self.count - sum(len(kept) for kept in self.images)
        if room > 0:
            self.images.append(_visible(images[:room].detach().float()))
            self.predicted.append(predicted[:room].detach())
            self.true.append(true[:room].detach())

    def compute(self) -> torch.Tensor:
        images, predicted, true = (dim_zero_cat(state)[:self.count].cpu()
                                   for state in (self.images, self.predicted, self.true))
        rows = [self._draw(images, masks) for masks in (predicted, true)]
        return make_grid(torch.cat(rows), nrow=len(images), padding=2)

    def _draw(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(1, self.num_classes).view(-1, 1, 1)
        colours = [PALETTE[(index - 1) % len(PALETTE)] for index in range(1, self.num_classes)]
        return torch.stack([draw_segmentation_masks(image, mask[None] == classes, alpha=0.5, colors=colours)
                            for image, mask in zip(images, masks)])


def _visible(images: torch.Tensor) -> torch.Tensor:
    """Normalized images stretched per image to uint8 RGB (a grey image repeated to three channels)."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    visible = ((images - low) / (high - low).clamp_min(1e-6) * 255).round().to(torch.uint8)
    return visible.expand(-1, 3, -1, -1) if visible.shape[1] == 1 else visible[:, :3]
