"""A small U-Net (Ronneberger et al. 2015): per-pixel class scores at the input's resolution.

Each level is two 3x3 convolutions with group norm, which keeps no running statistics: a model
early in training, or trained on small batches of large images, validates as it trains. `depth`
levels halve the resolution, the decoder doubles it back and joins the encoder's features of the
same level. Any side works: a side that does not divide by 2**depth is padded for the pass and
cropped back.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8  # norm groups per layer (fewer where the channel count does not divide by it)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = math.gcd(GROUPS, out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Outputs (N, num_classes, H, W) scores for an (N, C, H, W) image batch."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int = 32, depth: int = 4) -> None:
        super().__init__()
        channels = [width * 2**level for level in range(depth + 1)]
        self.stem = _double_conv(input_shape[0], channels[0])
        self.down = nn.ModuleList(_double_conv(channels[i], channels[i + 1]) for i in range(depth))
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
                                      for i in reversed(range(depth)))
        self.up = nn.ModuleList(_double_conv(2 * channels[i], channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.multiple = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % self.multiple, 0, -height % self.multiple))
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.up):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)[..., :height, :width]
